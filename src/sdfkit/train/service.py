"""Talking to the Tinker service: credentials, health check, deadlines, connect and close.

Training, sampling and every evaluation reach Tinker through these helpers, so none of them
imports the training loop for it. Talking to Tinker never hangs and never leaks: the key is
checked first (no network), then ``GET <base>/api/v1/healthz`` with a short timeout, then
every call runs under ``deadline`` seconds (see ``within``). The key is read by the SDK from
the environment; sdfkit never writes it, and error texts are scrubbed of it.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from sdfkit.errors import SdfError

T = TypeVar("T")

#: Default seconds a single Tinker call may take (``--deadline``): twice the 15 minutes of
#: queueing the SDK treats as normal before it even warns (``PAUSE_GRACE_PERIOD``).
DEFAULT_DEADLINE = 1800.0
#: Longest ``--deadline`` / ``--health-timeout`` accepted (a week): waits past it overflow
#: the platform's clock (``inf`` would be an OverflowError traceback).
MAX_DEADLINE = 7 * 24 * 3600.0
#: Where the SDK goes when ``TINKER_BASE_URL`` is unset (``tinker/lib/base_url.py``).
DEFAULT_BASE_URL = "https://tinker.thinkingmachines.dev/services/tinker-prod"


class TinkerServiceError(SdfError):
    """Tinker cannot be used right now; the message says why and what to do."""


class TinkerUnavailable(TinkerServiceError):
    """The service is unreachable, too slow, or failed a call; the message says which."""


class TinkerKeyMissing(TinkerServiceError):
    """No usable API key in the environment."""


def base_url() -> str:
    """The service URL exactly as the SDK resolves it: ``$TINKER_BASE_URL`` else production."""
    return (os.environ.get("TINKER_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")


def require_key() -> None:
    """Refuse, in one sentence, to start without credentials (nothing is sent anywhere).

    The SDK is asked which credentials it would use: ``TINKER_API_KEY``,
    ``TINKER_CREDENTIAL_CMD``, or the default key stored by ``tinker auth login``
    (``~/.tinker/credentials.json``)."""
    key = os.environ.get("TINKER_API_KEY", "")
    if key and not (key.startswith("tml-") or key.startswith("eyJ")):
        if os.environ.get("TINKER_CREDENTIAL_CMD"):
            return
        raise TinkerKeyMissing(
            "TINKER_API_KEY does not look like a Tinker API key (those start with 'tml-')."
        )
    if key or os.environ.get("TINKER_CREDENTIAL_CMD"):
        return
    try:
        from tinker.lib import credentials
        from tinker.lib._auth_token_provider import resolve_auth_provider
    except ImportError:  # pragma: no cover - an SDK without stored credentials
        resolve_auth_provider = None
    if resolve_auth_provider is not None:
        path = credentials.default_credentials_path()
        try:
            resolve_auth_provider(None, enforce_cmd=False)
            return
        except Exception as exc:  # noqa: BLE001 - TinkerError (none), or an unreadable file
            if type(exc).__name__ != "TinkerError":
                raise TinkerKeyMissing(
                    f"{path}: the Tinker credentials file cannot be read "
                    f"({type(exc).__name__}); run `tinker auth login` again or set "
                    "TINKER_API_KEY."
                ) from None
            if "tml-" in str(exc) and path.exists():
                raise TinkerKeyMissing(
                    f"{path}: the key stored by `tinker auth login` does not look like a "
                    "Tinker API key (those start with 'tml-')."
                ) from None
    raise TinkerKeyMissing(
        "TINKER_API_KEY is not set and no key is stored by `tinker auth login`: export your "
        "Tinker API key (it starts with 'tml-') or run `tinker auth login`; sdfkit never "
        "stores it."
    )


def _stored_key() -> str:
    """The default key ``tinker auth login`` stored, if any (to scrub it from messages)."""
    try:
        from tinker.lib import credentials

        path = credentials.default_credentials_path()
        if not path.exists():
            return ""
        record = credentials.JsonCredentialStore(path).get_default_key()
        return record.key if record is not None else ""
    except Exception:  # noqa: BLE001 - best effort: no stored key to scrub
        return ""


def scrub(text: str) -> str:
    """``text`` with the API key (if any, from the environment or stored) masked."""
    for key in (os.environ.get("TINKER_API_KEY", ""), _stored_key()):
        if len(key) > 4:
            text = text.replace(key, "***")
    return text


def check_health(url: str | None = None, timeout: float = 10.0) -> None:
    """``GET <base>/api/v1/healthz`` with a short timeout; one sentence if it fails."""
    base = (url or base_url()).rstrip("/")
    slow = (
        f"the Tinker service at {base} did not answer its health check within {timeout:g} s "
        "(--health-timeout); check TINKER_BASE_URL and your network."
    )
    try:
        with urllib.request.urlopen(f"{base}/api/v1/healthz", timeout=timeout) as resp:  # noqa: S310
            status = resp.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except TimeoutError:
        raise TinkerUnavailable(slow) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            raise TinkerUnavailable(slow) from None
        raise TinkerUnavailable(
            f"the Tinker service at {base} could not be reached for its health check "
            f"({scrub(str(reason))}); check TINKER_BASE_URL and your network."
        ) from None
    if not 200 <= status < 300:
        raise TinkerUnavailable(
            f"the Tinker service at {base} answered its health check with HTTP {status}; "
            "try again later."
        )


def within(deadline: float, what: str, fn: Callable[[], T]) -> T:
    """Run ``fn()`` (a service call, typically ``submit(...).result()``) under a deadline.

    The call runs in a daemon thread; past ``deadline`` seconds we stop waiting and raise one
    sentence (a daemon thread never keeps the process alive). Other exceptions of ``fn``
    become ``TinkerUnavailable`` with the key scrubbed from their text.
    """
    from sdfkit.train.tinker_watch import watch

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    with watch() as seen:
        worker = threading.Thread(target=work, name=f"tinker {what}", daemon=True)
        worker.start()
        worker.join(deadline)
        if worker.is_alive():
            raise TinkerUnavailable(
                f"Tinker did not finish {what} within {deadline:g} s (--deadline): "
                f"{seen.describe()}; rerun the same command to resume from the last saved "
                "checkpoint."
            )
    if "error" in box:
        exc = box["error"]
        if isinstance(exc, (SdfError, KeyboardInterrupt)):
            raise exc
        lines = scrub(str(exc)).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        if is_auth_error(exc):
            # rerunning with the same credentials cannot help: say what can
            raise TinkerKeyMissing(
                f"Tinker refused the credentials while {what} ({detail}): check "
                "TINKER_API_KEY, or the key stored by `tinker auth login`."
            ) from None
        raise TinkerUnavailable(
            f"Tinker failed {what} ({detail}); rerun the same command to resume from the last "
            "saved checkpoint."
        ) from None
    return box["value"]


def is_auth_error(exc: BaseException) -> bool:
    """Whether the service (or the SDK, before sending) refused the credentials."""
    for e in (exc, exc.__cause__, exc.__context__):
        if e is None:
            continue
        if getattr(e, "status_code", None) in (401, 403):
            return True
        name = type(e).__name__
        if name in ("AuthenticationError", "PermissionDeniedError"):
            return True
        text = str(e)
        if re.search(r"\bstatus (?:code )?(?:401|403)\b", text) or (
            name == "TinkerError" and ("api_key" in text or "credential" in text.lower())
        ):
            return True
    return False


def connect_service(
    health_timeout: float = 10.0, service_factory: Callable[[], Any] | None = None
) -> Any:
    """Key check, health check, then the ServiceClient (real unless a factory is given)."""
    require_key()
    check_health(timeout=health_timeout)
    if service_factory is not None:
        return service_factory()
    import tinker

    return tinker.ServiceClient()


def close_service(service: Any, status: str, deadline: float) -> None:
    """Finish the Tinker session (best effort, briefly: the run's records are already safe)."""
    close = getattr(service, "close", None)
    if close is None:
        return
    try:
        within(min(deadline, 30.0), "closing the session", lambda: close(status).result())
    except (TinkerServiceError, KeyboardInterrupt):
        pass
