"""The README tour's demo service: it takes its configuration from its environment, as a
service would, and says what it got. Under `vanta-cli run` every secret it prints is
replaced by <concealed by vanta>."""

import os

print(f"connecting to {os.environ['DATABASE_URL']}")
print(f"log level {os.environ.get('LOG_LEVEL', 'unset')}")
for name in ("STRIPE_KEY", "CACHE_URL", "OLD_DATABASE_URL"):
    value = os.environ.get(name)
    print(f"{name}: {'unset' if value is None else f'{len(value)} characters'}")
