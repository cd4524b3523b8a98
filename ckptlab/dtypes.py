"""The one dtype table: canonical names are torch's without the `torch.` prefix, for every format."""

from __future__ import annotations

# canonical name -> size in bits (bits, not bytes, because of packed 4/6-bit float formats)
DTYPE_BITS: dict[str, int] = {
    "bool": 8,
    "uint8": 8,
    "int8": 8,
    "uint16": 16,
    "int16": 16,
    "uint32": 32,
    "int32": 32,
    "uint64": 64,
    "int64": 64,
    "float16": 16,
    "bfloat16": 16,
    "float32": 32,
    "float64": 64,
    "complex32": 32,
    "complex64": 64,
    "complex128": 128,
    "float8_e4m3fn": 8,
    "float8_e5m2": 8,
    "float8_e4m3fnuz": 8,
    "float8_e5m2fnuz": 8,
    "float8_e8m0fnu": 8,
    "float4_e2m1fn_x2": 8,
    "float4_e2m1fn": 4,
    "float6_e2m3fn": 6,
    "float6_e3m2fn": 6,
    "qint8": 8,
    "quint8": 8,
    "qint32": 32,
    "quint4x2": 8,
    "quint2x4": 8,
}

# safetensors header codes (the reference implementation's Dtype enum)
SAFETENSORS_DTYPES: dict[str, str] = {
    "BOOL": "bool",
    "U8": "uint8",
    "I8": "int8",
    "U16": "uint16",
    "I16": "int16",
    "U32": "uint32",
    "I32": "int32",
    "U64": "uint64",
    "I64": "int64",
    "F16": "float16",
    "BF16": "bfloat16",
    "F32": "float32",
    "F64": "float64",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E8M0": "float8_e8m0fnu",
    "F4": "float4_e2m1fn",
    "F6_E2M3": "float6_e2m3fn",
    "F6_E3M2": "float6_e3m2fn",
}

# legacy typed-storage class names as pickled by torch.save (`torch.FloatStorage`, ...)
TORCH_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}

# torch dtype globals that appear in pickles (`torch.float8_e4m3fn`, `torch.float32`, ...), with aliases
TORCH_DTYPE_ALIASES: dict[str, str] = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "long": "int64",
    "int": "int32",
    "short": "int16",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}

# numpy dtype.str / HDF5 type -> canonical name (byte order stripped)
NUMPY_DTYPES: dict[str, str] = {
    "b1": "bool",
    "u1": "uint8",
    "i1": "int8",
    "u2": "uint16",
    "i2": "int16",
    "u4": "uint32",
    "i4": "int32",
    "u8": "uint64",
    "i8": "int64",
    "f2": "float16",
    "f4": "float32",
    "f8": "float64",
    "c8": "complex64",
    "c16": "complex128",
}


def torch_dtype_name(name: str) -> str | None:
    """Canonical name for a `torch.<name>` dtype global, or None if it is not a dtype."""
    name = TORCH_DTYPE_ALIASES.get(name, name)
    return name if name in DTYPE_BITS else None


def numpy_dtype_name(dtype_str: str) -> str | None:
    """Canonical name for a numpy dtype string such as '<f4' or '|b1'."""
    return NUMPY_DTYPES.get(dtype_str.lstrip("<>|="))


def nbytes_for(dtype: str, numel: int) -> int:
    """Bytes taken by `numel` elements of `dtype` (packed sub-byte types round up)."""
    return (numel * DTYPE_BITS[dtype] + 7) // 8


def itemsize(dtype: str) -> int:
    """Bytes per element, for byte-aligned dtypes."""
    return max(1, DTYPE_BITS[dtype] // 8)


# bytes per element of the byte-aligned dtypes, as a dict for per-tensor loops (sub-byte dtypes are absent:
# their sizes go through nbytes_for)
BYTE_SIZES: dict[str, int] = {name: bits // 8 for name, bits in DTYPE_BITS.items() if bits % 8 == 0}
