"""Input and DummyData: layers with tops and no bottoms (Caffe 1.0 semantics)."""
from __future__ import annotations

from ..proto.caffe_pb2 import FillerParameter
from .base import Layer, register
from .fillers import fill


def _n_tops(layer: Layer) -> int:
    return len(layer.param.top)


@register("Input")
class Input(Layer):
    """Declares the net's input blobs and their shapes (``input_param.shape``: none, one shared by
    every top, or one per top). Caffe leaves the data to the caller; here ``feed`` stores the
    arrays that the following forwards return (zeros of the declared shape until then)."""

    num_bottoms = 0
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        n_shapes, n_tops = len(self.param.input_param.shape), _n_tops(self)
        if n_shapes not in (0, 1, n_tops):
            raise self.error(f"input_param has {n_shapes} shapes for {n_tops} tops; give none, one, "
                             "or one per top")
        self.fed = None

    def declared_shapes(self) -> list[tuple] | None:
        shapes = self.param.input_param.shape
        if not len(shapes):
            return None
        return [tuple(int(d) for d in shapes[0 if len(shapes) == 1 else i].dim) for i in range(_n_tops(self))]

    def feed(self, arrays) -> None:
        """Arrays (one per top) that forward returns from now on; None forgets them."""
        if arrays is not None:
            arrays = list(arrays)
            if len(arrays) != _n_tops(self):
                raise self.error(f"fed {len(arrays)} arrays to {_n_tops(self)} tops")
        self.fed = arrays

    def reshape(self, bottom_shapes):
        if getattr(self, "fed", None) is not None:
            return [tuple(a.shape) for a in self.fed]
        shapes = self.declared_shapes()
        if shapes is None:
            raise self.error("input_param gives no shape and no data was fed")
        return shapes

    def forward(self, bottoms):
        if getattr(self, "fed", None) is not None:
            return list(self.fed)
        return [self.xp.zeros(s, dtype="float32") for s in self.reshape([])]


@register("DummyData")
class DummyData(Layer):
    """Tops filled by ``data_filler`` (none: constant 0; one for all tops; or one per top), shaped by
    ``shape`` (one for all or one per top) or the legacy num/channels/height/width lists.

    As in Caffe, tops with a constant filler are filled once at setup and returned unchanged
    (the same array every time); the others are refilled on every forward.
    """

    num_bottoms = 0
    num_tops = (1, None)

    def setup(self, bottom_shapes):
        p = self.param.dummy_data_param
        n_tops = _n_tops(self)
        n_fillers = len(p.data_filler)
        if n_fillers not in (0, 1, n_tops):
            raise self.error(f"{n_fillers} data_filler entries for {n_tops} tops; give none, one, or one per top")
        legacy = {name: list(getattr(p, name)) for name in ("num", "channels", "height", "width")}
        has_legacy = any(legacy.values())
        if has_legacy and len(p.shape):
            raise self.error("give either shape or the legacy num/channels/height/width, not both")
        if has_legacy:
            for name, values in legacy.items():
                if len(values) not in (1, n_tops):
                    raise self.error(f"{len(values)} '{name}' values for {n_tops} tops; give one, or one per top")
            self.shapes = [tuple(int(legacy[k][0 if len(legacy[k]) == 1 else i])
                                 for k in ("num", "channels", "height", "width")) for i in range(n_tops)]
        else:
            if len(p.shape) not in (1, n_tops):
                raise self.error(f"{len(p.shape)} shape entries for {n_tops} tops; give one, or one per top")
            self.shapes = [tuple(int(d) for d in p.shape[0 if len(p.shape) == 1 else i].dim)
                           for i in range(n_tops)]
        if n_fillers == 0:
            fillers = [FillerParameter(type="constant", value=0.0)] * n_tops
        elif n_fillers == 1:
            fillers = [p.data_filler[0]] * n_tops
        else:
            fillers = list(p.data_filler)
        self.fillers = fillers
        self.constant = [(f.type or "constant") == "constant" for f in fillers]
        self.fixed = [fill(f, s, self.backend) if c else None
                      for f, s, c in zip(fillers, self.shapes, self.constant)]

    def reshape(self, bottom_shapes):
        return list(self.shapes)

    def forward(self, bottoms):
        return [fixed if fixed is not None else fill(f, s, self.backend)
                for f, s, fixed in zip(self.fillers, self.shapes, self.fixed)]
