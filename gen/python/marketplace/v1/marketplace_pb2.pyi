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
    __slots__ = ("request_id", "consumer", "budget")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    consumer: str
    budget: Money
    def __init__(self, request_id: _Optional[str] = ..., consumer: _Optional[str] = ..., budget: _Optional[_Union[Money, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("request_id", "cart_id", "product_id", "quantity", "wait_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CART_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    cart_id: str
    product_id: str
    quantity: int
    wait_ms: int
    def __init__(self, request_id: _Optional[str] = ..., cart_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Shelf(_message.Message):
    __slots__ = ("producer", "capacity", "size", "items", "blocked_product_id", "more_products")
    PRODUCER_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    producer: str
    capacity: int
    size: int
    items: _containers.RepeatedCompositeFieldContainer[ProductCount]
    blocked_product_id: str
    more_products: int
    def __init__(self, producer: _Optional[str] = ..., capacity: _Optional[int] = ..., size: _Optional[int] = ..., items: _Optional[_Iterable[_Union[ProductCount, _Mapping]]] = ..., blocked_product_id: _Optional[str] = ..., more_products: _Optional[int] = ...) -> None: ...

class Cart(_message.Message):
    __slots__ = ("cart_label", "consumer", "items", "waiting_product_id", "more_products")
    CART_LABEL_FIELD_NUMBER: _ClassVar[int]
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    WAITING_PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    MORE_PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    cart_label: str
    consumer: str
    items: _containers.RepeatedCompositeFieldContainer[ProductCount]
    waiting_product_id: str
    more_products: int
    def __init__(self, cart_label: _Optional[str] = ..., consumer: _Optional[str] = ..., items: _Optional[_Iterable[_Union[ProductCount, _Mapping]]] = ..., waiting_product_id: _Optional[str] = ..., more_products: _Optional[int] = ...) -> None: ...

class GetMarketStateResponse(_message.Message):
    __slots__ = ("shelves", "carts", "orders", "items_ordered", "items_published", "carts_expired", "publishes_refused", "adds_refused", "items_withdrawn", "moves", "next_page_token", "total_shelves", "total_carts")
    SHELVES_FIELD_NUMBER: _ClassVar[int]
    CARTS_FIELD_NUMBER: _ClassVar[int]
    ORDERS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_ORDERED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_PUBLISHED_FIELD_NUMBER: _ClassVar[int]
    CARTS_EXPIRED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHES_REFUSED_FIELD_NUMBER: _ClassVar[int]
    ADDS_REFUSED_FIELD_NUMBER: _ClassVar[int]
    ITEMS_WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SHELVES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_CARTS_FIELD_NUMBER: _ClassVar[int]
    shelves: _containers.RepeatedCompositeFieldContainer[Shelf]
    carts: _containers.RepeatedCompositeFieldContainer[Cart]
    orders: int
    items_ordered: int
    items_published: int
    carts_expired: int
    publishes_refused: int
    adds_refused: int
    items_withdrawn: int
    moves: int
    next_page_token: str
    total_shelves: int
    total_carts: int
    def __init__(self, shelves: _Optional[_Iterable[_Union[Shelf, _Mapping]]] = ..., carts: _Optional[_Iterable[_Union[Cart, _Mapping]]] = ..., orders: _Optional[int] = ..., items_ordered: _Optional[int] = ..., items_published: _Optional[int] = ..., carts_expired: _Optional[int] = ..., publishes_refused: _Optional[int] = ..., adds_refused: _Optional[int] = ..., items_withdrawn: _Optional[int] = ..., moves: _Optional[int] = ..., next_page_token: _Optional[str] = ..., total_shelves: _Optional[int] = ..., total_carts: _Optional[int] = ...) -> None: ...

class WithdrawRequest(_message.Message):
    __slots__ = ("request_id", "producer_id", "product_id", "quantity")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    producer_id: str
    product_id: str
    quantity: int
    def __init__(self, request_id: _Optional[str] = ..., producer_id: _Optional[str] = ..., product_id: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class WithdrawResponse(_message.Message):
    __slots__ = ("withdrawn", "shelf_size")
    WITHDRAWN_FIELD_NUMBER: _ClassVar[int]
    SHELF_SIZE_FIELD_NUMBER: _ClassVar[int]
    withdrawn: int
    shelf_size: int
    def __init__(self, withdrawn: _Optional[int] = ..., shelf_size: _Optional[int] = ...) -> None: ...

class WatchSalesRequest(_message.Message):
    __slots__ = ("producer_id",)
    PRODUCER_ID_FIELD_NUMBER: _ClassVar[int]
    producer_id: str
    def __init__(self, producer_id: _Optional[str] = ...) -> None: ...

class WatchSalesResponse(_message.Message):
    __slots__ = ("product_id", "quantity", "price", "cart_label", "sold_at_unix_ms")
    PRODUCT_ID_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CART_LABEL_FIELD_NUMBER: _ClassVar[int]
    SOLD_AT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    product_id: str
    quantity: int
    price: Money
    cart_label: str
    sold_at_unix_ms: int
    def __init__(self, product_id: _Optional[str] = ..., quantity: _Optional[int] = ..., price: _Optional[_Union[Money, _Mapping]] = ..., cart_label: _Optional[str] = ..., sold_at_unix_ms: _Optional[int] = ...) -> None: ...

class ListProductsRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SearchProductsRequest(_message.Message):
    __slots__ = ("kind", "name_contains", "attribute_key", "attribute_value", "min_price", "max_price", "page_size", "page_token")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_KEY_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_VALUE_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    kind: str
    name_contains: str
    attribute_key: str
    attribute_value: str
    min_price: Money
    max_price: Money
    page_size: int
    page_token: str
    def __init__(self, kind: _Optional[str] = ..., name_contains: _Optional[str] = ..., attribute_key: _Optional[str] = ..., attribute_value: _Optional[str] = ..., min_price: _Optional[_Union[Money, _Mapping]] = ..., max_price: _Optional[_Union[Money, _Mapping]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchProductsResponse(_message.Message):
    __slots__ = ("products", "next_page_token")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[Product]
    next_page_token: str
    def __init__(self, products: _Optional[_Iterable[_Union[Product, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
