"""Small nets of today's shapes for the fold and whole-graph tests: ResNet-like
(BatchNorm + Scale, residual Eltwise), MobileNet-like (depthwise convolutions),
GoogLeNet-like (Concat of branches) and SqueezeNet-like (fire modules, no BatchNorm).

``net_text(kind, head)`` gives the prototxt; ``head`` is either an Input layer (a
deploy net) or Data layers reading an LMDB (train/test), see :func:`input_head` and
:func:`data_head`. ``random_weights(param)`` fills every blob with random values and
gives every BatchNorm non-trivial statistics (random mean, variance and scale factor).
"""
from __future__ import annotations

import numpy as np

CHANNELS, SIZE, CLASSES = 3, 12, 4


def input_head(batch: int = 2) -> str:
    return (f'layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ dim: {batch} dim: {CHANNELS} dim: {SIZE} dim: {SIZE} }} }} }}\n')


def data_head(db: str, batch: int = 4) -> str:
    out = ""
    for phase in ("TRAIN", "TEST"):
        out += (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: {phase} }} '
                f'transform_param {{ scale: 0.0078125 mean_value: 128 }} '
                f'data_param {{ source: "{db}" batch_size: {batch} backend: LMDB }} }}\n')
    return out


def data_tail(last: str) -> str:
    return (f'layer {{ name: "accuracy" type: "Accuracy" bottom: "{last}" bottom: "label" top: "accuracy" '
            f'include {{ phase: TEST }} }}\n'
            f'layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "{last}" bottom: "label" top: "loss" }}\n')


class _Net:
    def __init__(self):
        self.lines: list[str] = []

    def add(self, text: str) -> None:
        self.lines.append(text)

    def conv(self, name, bottom, top, n, k=3, stride=1, pad=None, group=1, bias=True):
        pad = (k - 1) // 2 if pad is None else pad
        extra = "" if bias else " bias_term: false"
        grp = f" group: {group}" if group != 1 else ""
        self.add(f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
                 f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {stride} pad: {pad}{grp}{extra} }} }}')

    def bn(self, name, bottom, top, scale=True, scale_bias=True):
        self.add(f'layer {{ name: "{name}" type: "BatchNorm" bottom: "{bottom}" top: "{top}" }}')
        if scale:
            b = "true" if scale_bias else "false"
            self.add(f'layer {{ name: "{name}_scale" type: "Scale" bottom: "{top}" top: "{top}" '
                     f'scale_param {{ bias_term: {b} }} }}')

    def relu(self, name, blob, top=None):
        self.add(f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{top or blob}" }}')

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def resnet_like() -> tuple[str, str]:
    """(body, last blob): conv-bn-scale-relu stem, an identity block and a projection block."""
    n = _Net()
    n.conv("conv1", "data", "conv1", 8, bias=False)
    n.bn("bn1", "conv1", "conv1")
    n.relu("relu1", "conv1")
    # identity block: two convs, sum with the shortcut
    n.conv("res2a", "conv1", "res2a", 8, bias=False)
    n.bn("bn2a", "res2a", "res2a")
    n.relu("relu2a", "res2a")
    n.conv("res2b", "res2a", "res2b", 8, bias=True)
    n.bn("bn2b", "res2b", "res2b", scale_bias=False)
    n.add('layer { name: "sum2" type: "Eltwise" bottom: "conv1" bottom: "res2b" top: "sum2" }')
    n.relu("relu2", "sum2")
    # projection block, non-in-place BatchNorm / Scale, strided
    n.conv("res3a", "sum2", "res3a", 12, stride=2, bias=False)
    n.add('layer { name: "bn3a" type: "BatchNorm" bottom: "res3a" top: "res3a_bn" }')
    n.add('layer { name: "bn3a_scale" type: "Scale" bottom: "res3a_bn" top: "res3a_sc" '
          'scale_param { bias_term: true } }')
    n.relu("relu3a", "res3a_sc", "res3a_relu")
    n.conv("res3b", "res3a_relu", "res3b", 12, bias=False)
    n.bn("bn3b", "res3b", "res3b")
    n.conv("proj3", "sum2", "proj3", 12, k=1, stride=2, bias=False)
    n.bn("bnproj3", "proj3", "proj3")
    n.add('layer { name: "sum3" type: "Eltwise" bottom: "proj3" bottom: "res3b" top: "sum3" '
          'eltwise_param { operation: SUM coeff: 1 coeff: 0.5 } }')
    n.relu("relu3", "sum3")
    n.add('layer { name: "pool" type: "Pooling" bottom: "sum3" top: "pool" '
          'pooling_param { pool: AVE global_pooling: true } }')
    n.add(f'layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
          f'inner_product_param {{ num_output: {CLASSES} }} }}')
    return n.text(), "fc"


def mobilenet_like() -> tuple[str, str]:
    """Strided stem, two depthwise-separable blocks (depthwise group == channels), max pool, FC + BN."""
    n = _Net()
    n.conv("conv1", "data", "conv1", 8, stride=2, bias=False)
    n.bn("conv1_bn", "conv1", "conv1")
    n.relu("relu1", "conv1")
    ch = 8
    for i, out in ((2, 16), (3, 16)):
        n.conv(f"conv{i}_dw", f"conv{i - 1}" if i == 2 else f"conv{i - 1}_pw", f"conv{i}_dw", ch, group=ch,
               bias=False)
        n.bn(f"conv{i}_dw_bn", f"conv{i}_dw", f"conv{i}_dw")
        n.relu(f"relu{i}_dw", f"conv{i}_dw")
        n.conv(f"conv{i}_pw", f"conv{i}_dw", f"conv{i}_pw", out, k=1, bias=(i == 3))
        n.bn(f"conv{i}_pw_bn", f"conv{i}_pw", f"conv{i}_pw")
        n.relu(f"relu{i}_pw", f"conv{i}_pw")
        ch = out
    n.add('layer { name: "pool" type: "Pooling" bottom: "conv3_pw" top: "pool" '
          'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
    n.add(f'layer {{ name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
          f'inner_product_param {{ num_output: {CLASSES} }} }}')
    n.bn("fc_bn", "fc", "fc")
    return n.text(), "fc"


def googlenet_like() -> tuple[str, str]:
    """An inception module: 1x1, 3x3 and pool branches joined by Concat."""
    n = _Net()
    n.conv("conv1", "data", "conv1", 8)
    n.relu("relu1", "conv1")
    n.add('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
          'pooling_param { pool: MAX kernel_size: 3 stride: 2 } }')
    n.conv("inc_1x1", "pool1", "inc_1x1", 4, k=1)
    n.relu("inc_relu_1x1", "inc_1x1")
    n.conv("inc_3x3_reduce", "pool1", "inc_3x3_reduce", 4, k=1)
    n.relu("inc_relu_3x3_reduce", "inc_3x3_reduce")
    n.conv("inc_3x3", "inc_3x3_reduce", "inc_3x3", 6)
    n.relu("inc_relu_3x3", "inc_3x3")
    n.add('layer { name: "inc_pool" type: "Pooling" bottom: "pool1" top: "inc_pool" '
          'pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }')
    n.conv("inc_pool_proj", "inc_pool", "inc_pool_proj", 3, k=1)
    n.relu("inc_relu_pool_proj", "inc_pool_proj")
    n.add('layer { name: "inc_output" type: "Concat" bottom: "inc_1x1" bottom: "inc_3x3" '
          'bottom: "inc_pool_proj" top: "inc_output" }')
    n.add('layer { name: "pool2" type: "Pooling" bottom: "inc_output" top: "pool2" '
          'pooling_param { pool: AVE kernel_size: 3 stride: 2 } }')
    n.add('layer { name: "drop" type: "Dropout" bottom: "pool2" top: "pool2" dropout_param { dropout_ratio: 0.4 } }')
    n.add(f'layer {{ name: "fc" type: "InnerProduct" bottom: "pool2" top: "fc" '
          f'inner_product_param {{ num_output: {CLASSES} }} }}')
    return n.text(), "fc"


def squeezenet_like() -> tuple[str, str]:
    """A fire module (squeeze 1x1, expand 1x1 + 3x3 concatenated), conv classifier, global AVE pool."""
    n = _Net()
    n.conv("conv1", "data", "conv1", 8, stride=2)
    n.relu("relu_conv1", "conv1")
    n.conv("fire2/squeeze1x1", "conv1", "fire2/squeeze1x1", 4, k=1)
    n.relu("fire2/relu_squeeze1x1", "fire2/squeeze1x1")
    n.conv("fire2/expand1x1", "fire2/squeeze1x1", "fire2/expand1x1", 6, k=1)
    n.relu("fire2/relu_expand1x1", "fire2/expand1x1")
    n.conv("fire2/expand3x3", "fire2/squeeze1x1", "fire2/expand3x3", 6)
    n.relu("fire2/relu_expand3x3", "fire2/expand3x3")
    n.add('layer { name: "fire2/concat" type: "Concat" bottom: "fire2/expand1x1" bottom: "fire2/expand3x3" '
          'top: "fire2/concat" }')
    n.conv("conv10", "fire2/concat", "conv10", CLASSES, k=1)
    n.relu("relu_conv10", "conv10")
    n.add('layer { name: "pool10" type: "Pooling" bottom: "conv10" top: "pool10" '
          'pooling_param { pool: AVE global_pooling: true } }')
    return n.text(), "pool10"


KINDS = {"resnet": resnet_like, "mobilenet": mobilenet_like, "googlenet": googlenet_like,
         "squeezenet": squeezenet_like}


def net_text(kind: str, head: str, with_tail: bool = False) -> str:
    body, last = KINDS[kind]()
    return f'name: "{kind}_like"\n' + head + body + (data_tail(last) if with_tail else "")


def last_blob(kind: str) -> str:
    return KINDS[kind]()[1]


def random_weights(net, seed: int = 0) -> None:
    """Random weights in place for every layer of ``net`` (a NumPy Net); BatchNorm layers get
    random statistics stored as Caffe stores them (sums times a random scale factor)."""
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        if not layer.blobs:
            continue
        if layer.type == "BatchNorm":
            c = layer.blobs[0].shape[0]
            factor = rng.uniform(0.5, 20.0)
            layer.blobs[0][...] = rng.normal(0, 0.5, c) * factor
            layer.blobs[1][...] = rng.uniform(0.2, 3.0, c) * factor
            layer.blobs[2][...] = factor
        elif layer.type == "Scale":
            layer.blobs[0][...] = rng.uniform(0.5, 1.5, layer.blobs[0].shape)
            for b in layer.blobs[1:]:
                b[...] = rng.normal(0, 0.3, b.shape)
        else:
            w = layer.blobs[0]
            fan_in = max(1, int(np.prod(w.shape[1:])))
            w[...] = rng.normal(0, np.sqrt(2.0 / fan_in), w.shape)
            for b in layer.blobs[1:]:
                b[...] = rng.normal(0, 0.2, b.shape)
