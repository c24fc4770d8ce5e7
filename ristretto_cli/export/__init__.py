"""Out to hardware and today's runtimes: ONNX / QONNX export, integer export, ONNX import.

What lives here:

* :mod:`.graph`      - ``OnnxGraph``: nodes, initializers, unique names, and which ONNX
  tensor holds each Caffe blob right now (in-place layers and in-place trims rebind it);
* :mod:`.handlers`   - one function per Caffe layer type, and the plain table
  ``HANDLERS`` (type -> handler), like ONNX Runtime's quantization registry;
* :mod:`.quant`      - the Ristretto layers as QuantizeLinear/DequantizeLinear pairs
  (``qdq``) or QONNX ``Quant`` nodes (``qonnx``) around the float handlers;
* :mod:`.onnx_export`- the driver: a TEST-phase net -> ``onnx.ModelProto``, checked;
* :mod:`.integers`   - the integer codes and shifts of every quantized layer (.npz, C header);
* :mod:`.onnx_import`- the CNN subset of ONNX back into a Caffe net and caffemodel;
* :mod:`.quant_import`- Q/DQ and QONNX trims around Conv / ConvTranspose / Gemm / MatMul
  found as Ristretto layers (the inverse of :mod:`.quant`) for the import.

``onnx`` is imported inside the functions that need it, so ``import ristretto_cli.export``
stays cheap.

What it may import: ``backend``, ``caffe``, ``errors``, ``formats``, ``layers``, ``net``,
``proto``; never ``commands`` (it logs and returns; the command prints).
"""
