"""The schema the original Caffe-Ristretto knows: ours without the "ristretto extension" lines.

``proto/caffe.proto`` marks every addition of ours with the comment
tag ``ristretto extension`` on the declaring line (extra Rounding values, fields
numbered >= 1000 in QuantizationParameter). This module finds those lines, removes
the declarations from a copy of the compiled FileDescriptorProto, and builds the
result in a separate DescriptorPool -- no protoc needed at run time. Parsing with
it tells whether a prototxt / caffemodel we write is readable by the original.
"""
from __future__ import annotations

import functools
import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from ..errors import RistrettoError
from ..proto import caffe_pb2

EXTENSION_TAG = "ristretto extension"
PROTO_FILE = os.path.join(os.path.dirname(caffe_pb2.__file__), "caffe.proto")

_OPEN = re.compile(r"^\s*(message|enum)\s+(\w+)\s*\{")
_FIELD = re.compile(r"^\s*(?:optional|required|repeated)\s+[\w.]+\s+(\w+)\s*=\s*(\d+)")
_ENUM_VALUE = re.compile(r"^\s*(\w+)\s*=\s*(-?\d+)\s*;")


def extension_declarations(proto_text: str | None = None) -> list[tuple[str, str, str, int]]:
    """``(kind, scope, name, number)`` of every tagged declaration in caffe.proto.

    kind is "field" or "enum_value"; scope is the dotted path of the enclosing
    message / enum below the package (e.g. "QuantizationParameter.Rounding").
    """
    if proto_text is None:
        with open(PROTO_FILE, encoding="utf-8") as f:
            proto_text = f.read()
    stack: list[tuple[str, str]] = []
    found = []
    for lineno, raw in enumerate(proto_text.splitlines(), 1):
        code, _, comment = raw.partition("//")
        m = _OPEN.match(code)
        if m:
            stack.append((m.group(1), m.group(2)))
        elif EXTENSION_TAG in comment and code.strip():
            scope = ".".join(name for _, name in stack)
            inside_enum = bool(stack) and stack[-1][0] == "enum"
            decl = (_ENUM_VALUE if inside_enum else _FIELD).match(code)
            if not decl:
                raise RuntimeError(f"{PROTO_FILE}:{lineno}: '{EXTENSION_TAG}' tag on a line that declares "
                                   f"no field or enum value")
            found.append(("enum_value" if inside_enum else "field", scope, decl.group(1), int(decl.group(2))))
        # Closing braces (possibly several, possibly on a declaring line).
        for _ in range(code.count("}")):
            if stack:
                stack.pop()
    return found


def _strip(file_proto: descriptor_pb2.FileDescriptorProto, declarations) -> None:
    def find_message(path):
        container, msg = file_proto.message_type, None
        for name in path:
            msg = next((m for m in container if m.name == name), None)
            if msg is None:
                return None
            container = msg.nested_type
        return msg

    def find_enum(path):
        *outer, name = path
        if outer:
            parent = find_message(outer)
            enums = parent.enum_type if parent is not None else []
        else:
            enums = file_proto.enum_type
        return next((e for e in enums if e.name == name), None)

    for kind, scope, name, number in declarations:
        path = scope.split(".") if scope else []
        if kind == "field":
            msg = find_message(path)
            items = msg.field if msg is not None else None
        else:
            enum = find_enum(path)
            items = enum.value if enum is not None else None
        if items is None:
            raise RuntimeError(f"caffe.proto: cannot find scope {scope} of tagged {kind} {name}")
        for i, item in enumerate(items):
            if item.name == name and item.number == number:
                del items[i]
                break
        else:
            raise RuntimeError(f"caffe.proto: tagged {kind} {scope}.{name} = {number} is not in the compiled "
                               f"schema (is caffe_pb2.py stale? run `make proto`)")


@functools.lru_cache(maxsize=1)
def original_pool() -> descriptor_pool.DescriptorPool:
    """A DescriptorPool holding package ``caffe`` without our extensions."""
    file_proto = descriptor_pb2.FileDescriptorProto()
    caffe_pb2.DESCRIPTOR.CopyToProto(file_proto)
    _strip(file_proto, extension_declarations())
    file_proto.name = "caffe_original.proto"  # a separate pool, but keep the name distinct anyway
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file_proto.SerializeToString())
    return pool


def original_message_class(name: str):
    """The message class ``caffe.<name>`` of the original schema (e.g. "NetParameter")."""
    return message_factory.GetMessageClass(original_pool().FindMessageTypeByName(f"caffe.{name}"))


def parse_with_original_schema(text: str, message_name: str = "NetParameter", filename: str = "<text>"):
    """Parse prototxt ``text`` as the original Caffe-Ristretto would.

    Returns a message of the original schema's class; raises RistrettoError
    ``FILE:LINE:COL: ...`` on any field or enum value it does not know.
    """
    message = original_message_class(message_name)()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        detail = re.sub(r"^\s*\d+:\d+\s*:\s*", "", str(e), count=1)
        where = f"{filename}:{line}:{col}" if line is not None else filename
        raise RistrettoError(f"{where}: not readable by the original Caffe-Ristretto: {detail}") from None
    return message


def unknown_field_paths(message, prefix: str = "") -> list[str]:
    """Paths of fields (or enum values) inside ``message`` that its schema does not know.

    For binary data: the protobuf runtime keeps unknown fields silently, so a
    caffemodel parsed with the original schema must be checked with this.
    """
    from google.protobuf.unknown_fields import UnknownFieldSet

    out = [f"{prefix or message.DESCRIPTOR.name}#{u.field_number}" for u in UnknownFieldSet(message)]
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{prefix}.{field.name}" if prefix else field.name
        if _is_repeated(field):
            for i, item in enumerate(value):
                out.extend(unknown_field_paths(item, f"{name}[{i}]"))
        else:
            out.extend(unknown_field_paths(value, name))
    return out


def _is_repeated(field) -> bool:
    flag = getattr(field, "is_repeated", None)  # protobuf >= 6
    if flag is not None:
        return bool(flag)
    return field.label == field.LABEL_REPEATED


def parse_binary_with_original_schema(data: bytes, message_name: str = "NetParameter",
                                      filename: str = "<bytes>"):
    """Decode binary ``data`` with the original schema; RistrettoError if anything is unknown to it."""
    message = original_message_class(message_name)()
    try:
        message.ParseFromString(data)
    except Exception as e:  # DecodeError and friends
        raise RistrettoError(f"{filename}: cannot be decoded as {message_name}: {e}") from None
    unknown = unknown_field_paths(message)
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise RistrettoError(f"{filename}: not readable by the original Caffe-Ristretto: unknown {shown}")
    return message
