"""The conversation memory window: which past exchanges a request sees, and how they become chat messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gorkheavy.core.types import ChatMessage, Exchange


def window(exchanges: Sequence[Exchange], turns: int) -> list[Exchange]:
    """The last ``turns`` exchanges, oldest first (``turns`` <= 0 means no memory)."""
    if turns <= 0:
        return []
    return list(exchanges[-turns:])


def as_chat(exchanges: Iterable[Exchange]) -> list[ChatMessage]:
    """Past exchanges as alternating user/assistant messages, oldest first."""
    messages: list[ChatMessage] = []
    for exchange in exchanges:
        messages.append(ChatMessage("user", exchange.user))
        messages.append(ChatMessage("assistant", exchange.answer))
    return messages


def as_transcript(exchanges: Iterable[Exchange]) -> str:
    """Past exchanges as plain text for prompts that evaluate rather than continue the conversation."""
    lines = []
    for exchange in exchanges:
        lines.append(f"User: {exchange.user}")
        lines.append(f"Assistant: {exchange.answer}")
    return "\n".join(lines)


def exchanges_from_chat(messages: Sequence[ChatMessage], turns: int) -> list[Exchange]:
    """Rebuild exchanges from an OpenAI-style message list (the history a stateless client sends).

    A user message followed by an assistant message is one exchange; system messages and unpaired messages are
    skipped. Only the last ``turns`` exchanges are kept.
    """
    exchanges: list[Exchange] = []
    pending: str | None = None
    for message in messages:
        if message.role == "user":
            pending = message.content
        elif message.role == "assistant" and pending is not None:
            exchanges.append(Exchange(user=pending, answer=message.content))
            pending = None
    return window(exchanges, turns)
