"""Wrong tokens per client address: after a few within a window, that address is refused,
right token or not, until the window has passed; so the token cannot be guessed at the
speed of the server. In memory only, and bounded: a brake, not a record."""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable

# Wrong tokens a minute before the brake: enough for a script that tries each write of the
# API with a wrong token on purpose, far too few to guess a token.
FAILURES = 10


def client(address: str) -> str:
    """Who is counted: an IPv4 address, or an IPv6 /64 (one host may hold all of it).
    Behind a reverse proxy every client is the proxy's address (README)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)


class Throttle:
    def __init__(self, failures: int = FAILURES, window_s: float = 60.0, addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.window_s = window_s
        self.addresses = addresses
        self._clock = clock
        # address → times of its recent failures, oldest first; the address that failed
        # longest ago is first, and the first dropped when there are too many.
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try a token again; 0 when it may now."""
        address = client(address)
        recent = self._seen.get(address)
        if recent is None:
            return 0.0
        now = self._clock()
        while recent and recent[0] <= now - self.window_s:
            recent.popleft()
        if not recent:
            del self._seen[address]
            return 0.0
        return recent[0] + self.window_s - now if len(recent) >= self.failures else 0.0

    def attempted(self, address: str, right: bool) -> bool:
        """Count a try of `address`; `right`, so a caller can test and count at once."""
        address = client(address)
        if right:
            self._seen.pop(address, None)
            return True
        recent = self._seen.pop(address, None) or deque(maxlen=self.failures)
        recent.append(self._clock())
        self._seen[address] = recent
        while len(self._seen) > self.addresses:
            self._seen.popitem(last=False)
        return False
