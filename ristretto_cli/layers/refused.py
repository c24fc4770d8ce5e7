"""Caffe layer types we read in a prototxt but never build, and why.

The net refuses them by name with the reason, instead of calling them unknown.
"""
from __future__ import annotations

_NO_HDF5 = "HDF5 files are not read or written (no HDF5 dependency); convert the data to LMDB"
_RECURRENT = "recurrent layers are not implemented (ristretto simulates CNN accelerators)"

REFUSED_TYPES: dict[str, str] = {
    "Python": "Python layers run arbitrary code and are never loaded",
    "HDF5Data": _NO_HDF5,
    "HDF5Output": _NO_HDF5,
    "WindowData": "R-CNN window files are not read; crop the windows into an LMDB or ImageData list instead",
    "MemoryData": "its data comes from C++/Python code at run time, which a command line cannot give; "
                  "use Input (and `ristretto forward --input`) instead",
    "RNN": _RECURRENT,
    "LSTM": _RECURRENT,
    "LSTMUnit": _RECURRENT,
}
