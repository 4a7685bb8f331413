"""Two event-sourced entities declared in one .proto file, written for CloudState's
Python support library (`cloudstate` 0.1.1 on PyPI): an order reserves its stock
with a synchronous side effect on the Stock entity before the client hears back.
`Confused` both forwards and replies, which the SDK refuses.

The message classes are generated from proto/orders/orders.proto into ./generated
by scripts/python-cart-env.sh.
"""

import logging
import sys
from dataclasses import dataclass
from pathlib import Path

GENERATED = Path(__file__).resolve().parent / "generated"
if not (GENERATED / "orders" / "orders_pb2.py").exists():
    sys.exit(f"{GENERATED} has no orders/orders_pb2.py: run scripts/python-cart-env.sh first")
sys.path.insert(0, str(GENERATED))

from google.protobuf.any_pb2 import Any  # noqa: E402
from google.protobuf.empty_pb2 import Empty  # noqa: E402

from cloudstate.cloudstate import CloudState  # noqa: E402
from cloudstate.entity_pb2 import Forward, SideEffect  # noqa: E402
from cloudstate.event_sourced_context import EventSourcedCommandContext  # noqa: E402
from cloudstate.event_sourced_entity import EventSourcedEntity  # noqa: E402

from orders import orders_pb2 as api  # noqa: E402

ORDERS = api.DESCRIPTOR.services_by_name["Orders"]
STOCK = api.DESCRIPTOR.services_by_name["Stock"]


@dataclass
class OrderState:
    order_id: str
    product_id: str = ""
    quantity: int = 0


@dataclass
class StockState:
    product_id: str
    reserved: int = 0


orders = EventSourcedEntity(ORDERS, [api.DESCRIPTOR], OrderState, persistence_id="orders")
stock = EventSourcedEntity(STOCK, [api.DESCRIPTOR], StockState, persistence_id="stock")


def packed(message):
    payload = Any()
    payload.Pack(message)
    return payload


@orders.command_handler("Place")
def place(state: OrderState, command: api.PlaceOrder, ctx: EventSourcedCommandContext):
    if command.quantity <= 0:
        ctx.fail("An order needs a positive quantity.")
        return Empty()
    ctx.emit(api.OrderPlaced(product_id=command.product_id, quantity=command.quantity))
    reservation = api.Reservation(product_id=command.product_id, quantity=command.quantity)
    ctx.effects.append(
        SideEffect(
            service_name=STOCK.full_name,
            command_name="Reserve",
            payload=packed(reservation),
            synchronous=True,
        )
    )
    return Empty()


@orders.command_handler("Get")
def get_order(state: OrderState, command: api.GetOrder):
    return api.Order(product_id=state.product_id, quantity=state.quantity)


@orders.command_handler("Confused")
def confused(state: OrderState, command: api.GetOrder, ctx: EventSourcedCommandContext):
    ctx.forward = Forward(
        service_name=ORDERS.full_name,
        command_name="Get",
        payload=packed(command),
    )
    return Empty()


@orders.event_handler(api.OrderPlaced)
def order_placed(state: OrderState, event: api.OrderPlaced):
    state.product_id = event.product_id
    state.quantity = event.quantity


@stock.command_handler("Reserve")
def reserve(state: StockState, command: api.Reservation, ctx: EventSourcedCommandContext):
    ctx.emit(api.StockReserved(quantity=command.quantity))
    return Empty()


@stock.command_handler("Get")
def get_stock(state: StockState, command: api.GetStock):
    return api.StockLevel(reserved=state.reserved)


@stock.event_handler(api.StockReserved)
def stock_reserved(state: StockState, event: api.StockReserved):
    state.reserved += event.quantity


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    CloudState().register_event_sourced_entity(orders).register_event_sourced_entity(stock).start()
