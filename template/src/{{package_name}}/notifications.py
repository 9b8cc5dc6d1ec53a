"""Discord and Slack notifications, each in the service's own payload format.

The webhook URL is a secret: it is read from the environment (or ``.env``),
never from the answers file or the code. With no URL the pipeline carries on.
"""

from __future__ import annotations

import logging

import requests

from .config import load_settings
from .messages import text

logger = logging.getLogger(__name__)

WEBHOOK_VARIABLES = {"discord": "DISCORD_WEBHOOK_URL", "slack": "SLACK_WEBHOOK_URL"}
_warned_missing: set[str] = set()


def build_payload(service: str, title: str, message: str, success: bool = True) -> dict:
    icon = "✅" if success else "❌"
    if service == "discord":
        return {"content": f"{icon} **{title}**\n{message}"}
    if service == "slack":
        return {
            "text": f"{icon} {title}: {message}",
            "blocks": [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"{icon} *{title}*\n{message}"},
                }
            ],
        }
    raise ValueError(f"Unknown notification service {service!r}: expected discord or slack")


def notify(title: str, message: str, success: bool = True, service: str | None = None) -> bool:
    """Send a message; returns whether it was delivered. Never raises on delivery."""
    settings = load_settings()  # also loads .env
    service = service or settings.notifications
    if service == "none":
        return False
    variable = WEBHOOK_VARIABLES[service]
    url = settings.webhook_url(variable)
    if not url:
        if variable not in _warned_missing:
            _warned_missing.add(variable)
            logger.warning(text("notifications.not_set", variable=variable, service=service))
        return False
    try:
        response = requests.post(
            url, json=build_payload(service, title, message, success), timeout=10
        )
        response.raise_for_status()
    except requests.RequestException as error:
        # The exception's text names the URL, a secret: log only what went wrong.
        response = error.response
        reason = f"HTTP {response.status_code}" if response is not None else type(error).__name__
        logger.warning(text("notifications.not_delivered", service=service, reason=reason))
        return False
    return True
