"""`python -m broker`: the same as `vanta-broker`."""

from cli.extras import vanta_broker

vanta_broker()
