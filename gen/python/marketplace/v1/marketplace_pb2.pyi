from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Money(_message.Message):
    __slots__ = ("currency_code", "units", "nanos")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    NANOS_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    units: int
    nanos: int
    def __init__(self, currency_code: _Optional[str] = ..., units: _Optional[int] = ..., nanos: _Optional[int] = ...) -> None: ...

class Attribute(_message.Message):
    __slots__ = ("key", "string_value", "int_value", "float_value", "bool_value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    FLOAT_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    string_value: str
    int_value: int
    float_value: float
    bool_value: bool
    def __init__(self, key: _Optional[str] = ..., string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., float_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class Product(_message.Message):
    __slots__ = ("product_id", "kind", "name", "price", "attributes")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    kind: str
    name: str
    price: Money
    attributes: _containers.RepeatedCompositeFieldContainer[Attribute]
    def __init__(self, product_id: _Optional[str] = ..., kind: _Optional[str] = ..., name: _Optional[str] = ..., price: _Optional[_Union[Money, _Mapping]] = ..., attributes: _Optional[_Iterable[_Union[Attribute, _Mapping]]] = ...) -> None: ...

class ProductCount(_message.Message):
    __slots__ = ("product_id", "quantity")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class RegisterProducerRequest(_message.Message):
    __slots__ = ("request_id", "name")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    name: str
    def __init__(self, request_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class RegisterProducerResponse(_message.Message):
    __slots__ = ("producer_id", "capacity")
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    producer_id: str
    capacity: int
    def __init__(self, producer_id: _Optional[str] = ..., capacity: _Optional[int] = ...) -> None: ...

class PublishRequest(_message.Message):
    __slots__ = ("request_id", "producer_id", "product", "quantity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    producer_id: str
    product: Product
    quantity: int
    def __init__(self, request_id: _Optional[str] = ..., producer_id: _Optional[str] = ..., product: _Optional[_Union[Product, _Mapping]] = ..., quantity: _Optional[int] = ...) -> None: ...

class PublishResponse(_message.Message):
    __slots__ = ("published", "shelf_size")
    PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    SHELF_SIZE_FIELD_NUMBER: _ClassVar[int]
    published: int
    shelf_size: int
    def __init__(self, published: _Optional[int] = ..., shelf_size: _Optional[int] = ...) -> None: ...

class CreateCartRequest(_message.Message):
    __slots__ = ("request_id", "consumer")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    consumer: str
    def __init__(self, request_id: _Optional[str] = ..., consumer: _Optional[str] = ...) -> None: ...

class CreateCartResponse(_message.Message):
    __slots__ = ("cart_id", "cart_label", "lease_ms")
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    CART_LABEL_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    cart_id: str
    cart_label: str
    lease_ms: int
    def __init__(self, cart_id: _Optional[str] = ..., cart_label: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class AddToCartRequest(_message.Message):
    __slots__ = ("request_id", "cart_id", "product_id", "quantity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cart_id: str
    product_id: str
    quantity: int
    def __init__(self, request_id: _Optional[str] = ..., cart_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class AddToCartResponse(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: int
    def __init__(self, added: _Optional[int] = ...) -> None: ...

class RemoveFromCartRequest(_message.Message):
    __slots__ = ("request_id", "cart_id", "product_id", "quantity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cart_id: str
    product_id: str
    quantity: int
    def __init__(self, request_id: _Optional[str] = ..., cart_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class RemoveFromCartResponse(_message.Message):
    __slots__ = ("removed", "missing")
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    removed: int
    missing: int
    def __init__(self, removed: _Optional[int] = ..., missing: _Optional[int] = ...) -> None: ...

class PlaceOrderRequest(_message.Message):
    __slots__ = ("request_id", "cart_id")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cart_id: str
    def __init__(self, request_id: _Optional[str] = ..., cart_id: _Optional[str] = ...) -> None: ...

class OrderLine(_message.Message):
    __slots__ = ("product", "quantity")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    product: Product
    quantity: int
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ..., quantity: _Optional[int] = ...) -> None: ...

class PlaceOrderResponse(_message.Message):
    __slots__ = ("lines", "total")
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    lines: _containers.RepeatedCompositeFieldContainer[OrderLine]
    total: Money
    def __init__(self, lines: _Optional[_Iterable[_Union[OrderLine, _Mapping]]] = ..., total: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

class GetMarketStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Shelf(_message.Message):
    __slots__ = ("producer", "capacity", "size", "items")
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    producer: str
    capacity: int
    size: int
    items: _containers.RepeatedCompositeFieldContainer[ProductCount]
    def __init__(self, producer: _Optional[str] = ..., capacity: _Optional[int] = ..., size: _Optional[int] = ..., items: _Optional[_Iterable[_Union[ProductCount, _Mapping]]] = ...) -> None: ...

class Cart(_message.Message):
    __slots__ = ("cart_label", "consumer", "items")
    CART_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    cart_label: str
    consumer: str
    items: _containers.RepeatedCompositeFieldContainer[ProductCount]
    def __init__(self, cart_label: _Optional[str] = ..., consumer: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ProductCount, _Mapping]]] = ...) -> None: ...

class GetMarketStateResponse(_message.Message):
    __slots__ = ("shelves", "carts", "orders", "items_ordered", "items_published", "carts_expired", "publishes_refused", "adds_refused")
    SHELVES_FIELD_NUMBER: _ClassVar[int]
    CARTS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_ORDERED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    CARTS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    ADDS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    shelves: _containers.RepeatedCompositeFieldContainer[Shelf]
    carts: _containers.RepeatedCompositeFieldContainer[Cart]
    orders: int
    items_ordered: int
    items_published: int
    carts_expired: int
    publishes_refused: int
    adds_refused: int
    def __init__(self, shelves: _Optional[_Iterable[_Union[Shelf, _Mapping]]] = ..., carts: _Optional[_Iterable[_Union[Cart, _Mapping]]] = ..., orders: _Optional[int] = ..., items_ordered: _Optional[int] = ..., items_published: _Optional[int] = ..., carts_expired: _Optional[int] = ..., publishes_refused: _Optional[int] = ..., adds_refused: _Optional[int] = ...) -> None: ...
