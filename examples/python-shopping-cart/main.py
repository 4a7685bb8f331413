"""Serves the shopping cart with CloudState's Python support library.

The SDK's gRPC server listens on HOST:PORT (default 127.0.0.1:8080), read from the
environment by `CloudState.start()`; `strata proxy` finds it there.
"""

import logging

from cloudstate.cloudstate import CloudState

from shopping_cart import entity

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    CloudState().register_event_sourced_entity(entity).start()
