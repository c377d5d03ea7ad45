"""vanta-cli and the client library services import (cli.client)."""
