# ruff: noqa
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_MODE_UNSPECIFIED: _ClassVar[OutputMode]
    OUTPUT_MODE_POLICY_ONLY: _ClassVar[OutputMode]
    OUTPUT_MODE_VALUE_ONLY: _ClassVar[OutputMode]
    OUTPUT_MODE_POLICY_AND_VALUE: _ClassVar[OutputMode]
OUTPUT_MODE_UNSPECIFIED: OutputMode
OUTPUT_MODE_POLICY_ONLY: OutputMode
OUTPUT_MODE_VALUE_ONLY: OutputMode
OUTPUT_MODE_POLICY_AND_VALUE: OutputMode

class BoardItem(_message.Message):
    __slots__ = ("id", "exponents")
    ID_FIELD_NUMBER: _ClassVar[int]
    EXPONENTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    exponents: bytes
    def __init__(self, id: _Optional[int] = ..., exponents: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("items", "output_mode", "include_value_probs")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_MODE_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VALUE_PROBS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[BoardItem]
    output_mode: OutputMode
    include_value_probs: bool
    def __init__(self, items: _Optional[_Iterable[_Union[BoardItem, _Mapping]]] = ..., output_mode: _Optional[_Union[OutputMode, str]] = ..., include_value_probs: _Optional[bool] = ...) -> None: ...

class PolicyOutput(_message.Message):
    __slots__ = ("move_probs", "legal_mask", "best_move", "bin_probs")
    MOVE_PROBS_FIELD_NUMBER: _ClassVar[int]
    LEGAL_MASK_FIELD_NUMBER: _ClassVar[int]
    BEST_MOVE_FIELD_NUMBER: _ClassVar[int]
    BIN_PROBS_FIELD_NUMBER: _ClassVar[int]
    move_probs: _containers.RepeatedScalarFieldContainer[float]
    legal_mask: int
    best_move: int
    bin_probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, move_probs: _Optional[_Iterable[float]] = ..., legal_mask: _Optional[int] = ..., best_move: _Optional[int] = ..., bin_probs: _Optional[_Iterable[float]] = ...) -> None: ...

class ValueOutput(_message.Message):
    __slots__ = ("value", "value_xform", "atom_probs")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_XFORM_FIELD_NUMBER: _ClassVar[int]
    ATOM_PROBS_FIELD_NUMBER: _ClassVar[int]
    value: float
    value_xform: float
    atom_probs: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, value: _Optional[float] = ..., value_xform: _Optional[float] = ..., atom_probs: _Optional[_Iterable[float]] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("id", "policy", "value")
    ID_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    id: int
    policy: PolicyOutput
    value: ValueOutput
    def __init__(self, id: _Optional[int] = ..., policy: _Optional[_Union[PolicyOutput, _Mapping]] = ..., value: _Optional[_Union[ValueOutput, _Mapping]] = ...) -> None: ...

class InferResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    def __init__(self, results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ValueSupport(_message.Message):
    __slots__ = ("min", "max", "n")
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    min: float
    max: float
    n: int
    def __init__(self, min: _Optional[float] = ..., max: _Optional[float] = ..., n: _Optional[int] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("has_policy_head", "has_value_head", "policy_head", "ev_bins", "ev_classes", "ev_bin_edges", "value_objective", "value_support", "value_transform", "value_epsilon", "value_reward_scale", "value_target", "config_json", "parameters", "max_batch", "device", "value_target_json")
    HAS_POLICY_HEAD_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUE_HEAD_FIELD_NUMBER: _ClassVar[int]
    POLICY_HEAD_FIELD_NUMBER: _ClassVar[int]
    EV_BINS_FIELD_NUMBER: _ClassVar[int]
    EV_CLASSES_FIELD_NUMBER: _ClassVar[int]
    EV_BIN_EDGES_FIELD_NUMBER: _ClassVar[int]
    VALUE_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    VALUE_SUPPORT_FIELD_NUMBER: _ClassVar[int]
    VALUE_TRANSFORM_FIELD_NUMBER: _ClassVar[int]
    VALUE_EPSILON_FIELD_NUMBER: _ClassVar[int]
    VALUE_REWARD_SCALE_FIELD_NUMBER: _ClassVar[int]
    VALUE_TARGET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    VALUE_TARGET_JSON_FIELD_NUMBER: _ClassVar[int]
    has_policy_head: bool
    has_value_head: bool
    policy_head: str
    ev_bins: int
    ev_classes: _containers.RepeatedScalarFieldContainer[str]
    ev_bin_edges: _containers.RepeatedScalarFieldContainer[float]
    value_objective: str
    value_support: ValueSupport
    value_transform: str
    value_epsilon: float
    value_reward_scale: float
    value_target: str
    config_json: str
    parameters: int
    max_batch: int
    device: str
    value_target_json: str
    def __init__(self, has_policy_head: _Optional[bool] = ..., has_value_head: _Optional[bool] = ..., policy_head: _Optional[str] = ..., ev_bins: _Optional[int] = ..., ev_classes: _Optional[_Iterable[str]] = ..., ev_bin_edges: _Optional[_Iterable[float]] = ..., value_objective: _Optional[str] = ..., value_support: _Optional[_Union[ValueSupport, _Mapping]] = ..., value_transform: _Optional[str] = ..., value_epsilon: _Optional[float] = ..., value_reward_scale: _Optional[float] = ..., value_target: _Optional[str] = ..., config_json: _Optional[str] = ..., parameters: _Optional[int] = ..., max_batch: _Optional[int] = ..., device: _Optional[str] = ..., value_target_json: _Optional[str] = ...) -> None: ...
