"""Bring old net and solver descriptions up to today's format, as Caffe 1.0 does on load.

Caffe upgrades a NetParameter in this order (``UpgradeNetAsNeeded``):

1. V0 -> V1: ``layers { layer { type: "conv" ... } }`` with one flat parameter
   message; "padding" layers are folded into the convolution / pooling they feed.
2. Data transformation: V1 Data / ImageData / WindowData layers that carry
   scale, mean_file, crop_size or mirror in their own parameter move them to
   ``transform_param``.
3. V1 -> V2: ``layers { type: CONVOLUTION blobs_lr: 1 ... }`` becomes
   ``layer { type: "Convolution" param { lr_mult: 1 } ... }``.
4. Net inputs: ``input:`` + ``input_shape`` / ``input_dim`` become an ``Input``
   layer named "input" placed first (a bare ``input:`` list, as found in old
   caffemodels, is dropped).
5. BatchNorm: a BatchNorm layer that declares three ``param`` specs gets
   lr_mult = decay_mult = 0 on each (its blobs are statistics, not parameters).

A SolverParameter's deprecated ``solver_type`` enum becomes the ``type`` string.
The same functions serve text prototxts and binary caffemodels. Where Caffe only
logs a problem and goes on, these functions log a warning (logger
``ristretto_cli.caffe.upgrade``) and go on; where Caffe aborts, they raise RistrettoError.
"""
from __future__ import annotations

import logging

from ..errors import RistrettoError
from ..proto import caffe_pb2

log = logging.getLogger(__name__)

V1 = caffe_pb2.V1LayerParameter

# Every value of V1LayerParameter.LayerType and the V2 type string it becomes.
# (The V1 enum has no Ristretto types: Ristretto layers only exist as V2 strings.)
V1_TYPE_NAMES: dict[int, str] = {
    V1.NONE: "",
    V1.ABSVAL: "AbsVal",
    V1.ACCURACY: "Accuracy",
    V1.ARGMAX: "ArgMax",
    V1.BNLL: "BNLL",
    V1.CONCAT: "Concat",
    V1.CONTRASTIVE_LOSS: "ContrastiveLoss",
    V1.CONVOLUTION: "Convolution",
    V1.DATA: "Data",
    V1.DECONVOLUTION: "Deconvolution",
    V1.DROPOUT: "Dropout",
    V1.DUMMY_DATA: "DummyData",
    V1.ELTWISE: "Eltwise",
    V1.EUCLIDEAN_LOSS: "EuclideanLoss",
    V1.EXP: "Exp",
    V1.FLATTEN: "Flatten",
    V1.HDF5_DATA: "HDF5Data",
    V1.HDF5_OUTPUT: "HDF5Output",
    V1.HINGE_LOSS: "HingeLoss",
    V1.IM2COL: "Im2col",
    V1.IMAGE_DATA: "ImageData",
    V1.INFOGAIN_LOSS: "InfogainLoss",
    V1.INNER_PRODUCT: "InnerProduct",
    V1.LRN: "LRN",
    V1.MEMORY_DATA: "MemoryData",
    V1.MULTINOMIAL_LOGISTIC_LOSS: "MultinomialLogisticLoss",
    V1.MVN: "MVN",
    V1.POOLING: "Pooling",
    V1.POWER: "Power",
    V1.RELU: "ReLU",
    V1.SIGMOID: "Sigmoid",
    V1.SIGMOID_CROSS_ENTROPY_LOSS: "SigmoidCrossEntropyLoss",
    V1.SILENCE: "Silence",
    V1.SLICE: "Slice",
    V1.SOFTMAX: "Softmax",
    V1.SOFTMAX_LOSS: "SoftmaxWithLoss",
    V1.SPLIT: "Split",
    V1.TANH: "TanH",
    V1.THRESHOLD: "Threshold",
    V1.WINDOW_DATA: "WindowData",
}

# V0 lower-case type names -> V1 enum.
V0_TYPES: dict[str, int] = {
    "accuracy": V1.ACCURACY,
    "bnll": V1.BNLL,
    "concat": V1.CONCAT,
    "conv": V1.CONVOLUTION,
    "data": V1.DATA,
    "dropout": V1.DROPOUT,
    "euclidean_loss": V1.EUCLIDEAN_LOSS,
    "flatten": V1.FLATTEN,
    "hdf5_data": V1.HDF5_DATA,
    "hdf5_output": V1.HDF5_OUTPUT,
    "im2col": V1.IM2COL,
    "images": V1.IMAGE_DATA,
    "infogain_loss": V1.INFOGAIN_LOSS,
    "innerproduct": V1.INNER_PRODUCT,
    "lrn": V1.LRN,
    "multinomial_logistic_loss": V1.MULTINOMIAL_LOGISTIC_LOSS,
    "pool": V1.POOLING,
    "relu": V1.RELU,
    "sigmoid": V1.SIGMOID,
    "softmax": V1.SOFTMAX,
    "softmax_loss": V1.SOFTMAX_LOSS,
    "split": V1.SPLIT,
    "tanh": V1.TANH,
    "window_data": V1.WINDOW_DATA,
}

SOLVER_TYPE_NAMES: dict[int, str] = {
    caffe_pb2.SolverParameter.SGD: "SGD",
    caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
    caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad",
    caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
    caffe_pb2.SolverParameter.ADADELTA: "AdaDelta",
    caffe_pb2.SolverParameter.ADAM: "Adam",
}


def _where(source: str) -> str:
    return source or "net"


# -- checks ------------------------------------------------------------------------

def net_needs_v0_upgrade(net) -> bool:
    return any(l.HasField("layer") for l in net.layers)


def net_needs_data_upgrade(net) -> bool:
    for l in net.layers:
        p = _data_param_of(l)
        if p is not None and any(p.HasField(f) for f in ("scale", "mean_file", "crop_size", "mirror")):
            return True
    return False


def net_needs_v1_upgrade(net) -> bool:
    return len(net.layers) > 0


def net_needs_input_upgrade(net) -> bool:
    return len(net.input) > 0


def net_needs_batchnorm_upgrade(net) -> bool:
    return any(l.type == "BatchNorm" and len(l.param) == 3 for l in net.layer)


def net_needs_upgrade(net) -> bool:
    return (net_needs_v0_upgrade(net) or net_needs_data_upgrade(net) or net_needs_v1_upgrade(net)
            or net_needs_input_upgrade(net) or net_needs_batchnorm_upgrade(net))


# -- the whole net -----------------------------------------------------------------

def upgrade_net(net: "caffe_pb2.NetParameter", source: str = "") -> "caffe_pb2.NetParameter":
    """Upgrade ``net`` in place to the V2 format (see the module doc) and return it.

    ``source`` names the file in messages.
    """
    if net_needs_v0_upgrade(net):
        log.warning("%s: upgrading deprecated V0 layer definitions", _where(source))
        upgrade_v0_net(net, source)
    if net_needs_data_upgrade(net):
        upgrade_data_transformation(net)
    if net_needs_v1_upgrade(net):
        log.info("%s: upgrading deprecated V1 'layers' definitions", _where(source))
        upgrade_v1_net(net, source)
    if net_needs_input_upgrade(net):
        upgrade_net_input(net, source)
    if net_needs_batchnorm_upgrade(net):
        upgrade_batchnorm(net)
    return net


# -- V0 -> V1 ----------------------------------------------------------------------

def _fold_padding_layers(net, source: str) -> list:
    """V0 "padding" layers removed; the conv/pool layer they feed gets their pad and input."""
    producer: dict[str, int] = {name: -1 for name in net.input}  # blob -> index of last producer
    out = []
    for i, conn in enumerate(net.layers):
        v0 = conn.layer
        new = None
        if v0.type != "padding":
            new = V1()
            new.CopyFrom(conn)
            out.append(new)
        for j, blob in enumerate(conn.bottom):
            if blob not in producer:
                raise RistrettoError(f"{_where(source)}: layer '{v0.name}' (V0) reads unknown blob '{blob}'")
            k = producer[blob]
            if k < 0:
                continue
            src = net.layers[k]
            if src.layer.type != "padding" or new is None:
                continue
            if v0.type not in ("conv", "pool"):
                raise RistrettoError(f"{_where(source)}: V0 padding layer '{src.layer.name}' feeds layer "
                                     f"'{v0.name}' of type '{v0.type}' (only conv and pool can be padded)")
            if len(conn.bottom) != 1 or len(src.bottom) != 1 or len(src.top) != 1:
                raise RistrettoError(f"{_where(source)}: V0 padding layer '{src.layer.name}' and layer "
                                     f"'{v0.name}' must have exactly one input and output")
            new.layer.pad = src.layer.pad
            new.bottom[j] = src.bottom[0]
        for blob in conn.top:
            producer[blob] = i
    return out


def _upgrade_v0_layer(conn, source: str):
    """One V0 layer (wrapped in a V1 container) as a V1 layer; warns about fields that do not apply."""
    v0 = conn.layer
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if v0.HasField("name"):
        out.name = v0.name
    t = v0.type
    if v0.HasField("type"):
        if t not in V0_TYPES:
            raise RistrettoError(f"{_where(source)}: V0 layer '{v0.name}' has unknown type '{t}'")
        out.type = V0_TYPES[t]
    out.blobs.extend(v0.blobs)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    def misplaced(field):
        log.warning("%s: V0 layer '%s': parameter %s does not apply to type '%s' (ignored)",
                    _where(source), v0.name, field, t)

    def has(f):
        return v0.HasField(f)

    conv, ip, pool = t == "conv", t == "innerproduct", t == "pool"
    for f, target in (("num_output", "num_output"), ("biasterm", "bias_term")):
        if has(f):
            if conv:
                setattr(out.convolution_param, target, getattr(v0, f))
            elif ip:
                setattr(out.inner_product_param, target, getattr(v0, f))
            else:
                misplaced(f)
    for f in ("weight_filler", "bias_filler"):
        if has(f):
            if conv:
                getattr(out.convolution_param, f).CopyFrom(getattr(v0, f))
            elif ip:
                getattr(out.inner_product_param, f).CopyFrom(getattr(v0, f))
            else:
                misplaced(f)
    for f, target in (("pad", "pad"), ("kernelsize", "kernel_size"), ("stride", "stride")):
        if has(f):
            if conv:
                getattr(out.convolution_param, target).append(getattr(v0, f))
            elif pool:
                setattr(out.pooling_param, target, getattr(v0, f))
            else:
                misplaced(f)
    if has("group"):
        if conv:
            out.convolution_param.group = v0.group
        else:
            misplaced("group")
    if has("pool"):
        if pool:
            out.pooling_param.pool = v0.pool  # same numbering: MAX, AVE, STOCHASTIC
        else:
            misplaced("pool")
    if has("dropout_ratio"):
        if t == "dropout":
            out.dropout_param.dropout_ratio = v0.dropout_ratio
        else:
            misplaced("dropout_ratio")
    for f in ("local_size", "alpha", "beta", "k"):
        if has(f):
            if t == "lrn":
                setattr(out.lrn_param, f, getattr(v0, f))
            else:
                misplaced(f)
    source_params = {"data": "data_param", "hdf5_data": "hdf5_data_param", "images": "image_data_param",
                     "window_data": "window_data_param", "infogain_loss": "infogain_loss_param"}
    if has("source"):
        if t in source_params:
            getattr(out, source_params[t]).source = v0.source
        else:
            misplaced("source")
    if has("batchsize"):
        if t in source_params and t != "infogain_loss":
            getattr(out, source_params[t]).batch_size = v0.batchsize
        else:
            misplaced("batchsize")
    # Transformation fields apply to any type.
    if has("scale"):
        out.transform_param.scale = v0.scale
    if has("meanfile"):
        out.transform_param.mean_file = v0.meanfile
    if has("cropsize"):
        out.transform_param.crop_size = v0.cropsize
    if has("mirror"):
        out.transform_param.mirror = v0.mirror
    if has("rand_skip"):
        if t in ("data", "images"):
            getattr(out, source_params[t]).rand_skip = v0.rand_skip
        else:
            misplaced("rand_skip")
    for f, target in (("shuffle_images", "shuffle"), ("new_height", "new_height"), ("new_width", "new_width")):
        if has(f):
            if t == "images":
                setattr(out.image_data_param, target, getattr(v0, f))
            else:
                misplaced(f)
    if has("concat_dim"):
        if t == "concat":
            out.concat_param.concat_dim = v0.concat_dim
        else:
            misplaced("concat_dim")
    for f, target in (("det_fg_threshold", "fg_threshold"), ("det_bg_threshold", "bg_threshold"),
                      ("det_fg_fraction", "fg_fraction"), ("det_context_pad", "context_pad"),
                      ("det_crop_mode", "crop_mode")):
        if has(f):
            if t == "window_data":
                setattr(out.window_data_param, target, getattr(v0, f))
            else:
                misplaced(f)
    if has("hdf5_output_param"):
        if t == "hdf5_output":
            out.hdf5_output_param.CopyFrom(v0.hdf5_output_param)
        else:
            misplaced("hdf5_output_param")
    return out


def upgrade_v0_net(net, source: str = ""):
    """V0 layers (``layers { layer { ... } }``) -> V1 layers, in place."""
    folded = _fold_padding_layers(net, source)
    upgraded = [_upgrade_v0_layer(conn, source) if conn.HasField("layer") else conn for conn in folded]
    del net.layers[:]
    net.layers.extend(upgraded)
    return net


# -- data transformation -----------------------------------------------------------

def _data_param_of(v1_layer):
    if v1_layer.type == V1.DATA:
        return v1_layer.data_param
    if v1_layer.type == V1.IMAGE_DATA:
        return v1_layer.image_data_param
    if v1_layer.type == V1.WINDOW_DATA:
        return v1_layer.window_data_param
    return None


def upgrade_data_transformation(net):
    """Move scale / mean_file / crop_size / mirror of V1 data layers into transform_param."""
    for l in net.layers:
        p = _data_param_of(l)
        if p is None:
            continue
        for f in ("scale", "mean_file", "crop_size", "mirror"):
            if p.HasField(f):
                setattr(l.transform_param, f, getattr(p, f))
                p.ClearField(f)
    return net


# -- V1 -> V2 ----------------------------------------------------------------------

_V1_PARAM_FIELDS = [f.name for f in V1.DESCRIPTOR.fields
                    if f.name.endswith("_param") and f.message_type is not None]


def upgrade_v1_layer(v1, source: str = "") -> "caffe_pb2.LayerParameter":
    """One V1LayerParameter as a LayerParameter."""
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    out.include.extend(v1.include)
    out.exclude.extend(v1.exclude)
    if v1.HasField("type"):
        if v1.type not in V1_TYPE_NAMES:
            raise RistrettoError(f"{_where(source)}: V1 layer '{v1.name}' has unknown type {v1.type}")
        out.type = V1_TYPE_NAMES[v1.type]
    out.blobs.extend(v1.blobs)

    def spec(i):
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        # V1 and ParamSpec number STRICT / PERMISSIVE alike.
        spec(i).share_mode = mode
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for f in _V1_PARAM_FIELDS:
        if v1.HasField(f):
            getattr(out, f).CopyFrom(getattr(v1, f))
    if v1.HasField("layer"):
        log.warning("%s: V1 layer '%s' also holds a V0 layer definition (ignored)", _where(source), v1.name)
    return out


def upgrade_v1_net(net, source: str = ""):
    """V1 ``layers`` -> V2 ``layer``, in place.

    A net that holds both forms is refused, as Caffe 1.0 does (``UpgradeV1Net``):
    upgrading would drop the ``layer`` entries, and a layer must never vanish silently.
    """
    if len(net.layer):
        raise RistrettoError(
            f"{_where(source)}: the net has both 'layer' and deprecated 'layers' entries "
            f"({len(net.layer)} and {len(net.layers)}), as Caffe 1.0 refuses too; write every layer in the "
            f"current form, layer {{ type: \"Convolution\" ... }} with string types, instead of "
            f"layers {{ type: CONVOLUTION ... }}")
    upgraded = [upgrade_v1_layer(l, source) for l in net.layers]
    net.ClearField("layers")
    net.ClearField("layer")
    net.layer.extend(upgraded)
    return net


# -- net inputs --------------------------------------------------------------------

def upgrade_net_input(net, source: str = ""):
    """``input`` + ``input_shape`` / ``input_dim`` -> a first layer ``input`` of type Input."""
    has_shape, has_dim = len(net.input_shape) > 0, len(net.input_dim) > 0
    if has_shape or has_dim:
        n = len(net.input)
        if has_shape and len(net.input_shape) < n:
            raise RistrettoError(f"{_where(source)}: {n} net inputs but only {len(net.input_shape)} "
                                 f"input_shape entries")
        if not has_shape and len(net.input_dim) < 4 * n:
            raise RistrettoError(f"{_where(source)}: {n} net inputs need {4 * n} input_dim values, "
                                 f"found {len(net.input_dim)}")
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(net.input):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i:4 * i + 4])
        rest = list(net.layer)
        net.ClearField("layer")
        net.layer.append(layer)
        net.layer.extend(rest)
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return net


# -- BatchNorm ---------------------------------------------------------------------

def upgrade_batchnorm(net):
    """BatchNorm layers with three param specs: their statistics get lr_mult = decay_mult = 0."""
    for l in net.layer:
        if l.type == "BatchNorm" and len(l.param) == 3:
            for p in l.param:
                p.lr_mult = 0.0
                p.decay_mult = 0.0
    return net


# -- solver ------------------------------------------------------------------------

def upgrade_solver(solver: "caffe_pb2.SolverParameter", source: str = "") -> "caffe_pb2.SolverParameter":
    """``solver_type`` enum -> ``type`` string, in place; inline nets are upgraded too."""
    if solver.HasField("solver_type"):
        if solver.HasField("type"):
            raise RistrettoError(f"{source or 'solver'}: both the deprecated 'solver_type' and 'type' are "
                                 f"set; keep only 'type'")
        solver.type = SOLVER_TYPE_NAMES[solver.solver_type]
        solver.ClearField("solver_type")
    for f in ("net_param", "train_net_param"):
        if solver.HasField(f):
            upgrade_net(getattr(solver, f), source)
    for n in solver.test_net_param:
        upgrade_net(n, source)
    return solver
