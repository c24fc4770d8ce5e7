"""Caffe's schema: ``caffe.proto`` (Caffe 1.0 + the original's final fields + Ristretto's
QuantizationParameter, our additions tagged) and ``caffe_pb2``, generated from it by
``make proto`` (a test fails when it is stale). Installed as ``ristretto_cli.proto``
from the repository's top-level ``proto/`` folder (setup.cfg ``package_dir``).

What it may import: protobuf only.
"""
