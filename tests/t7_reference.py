"""Torch7 test fixtures without Lua: a writer, pose-hg-train's network as an nngraph, and a NumPy forward pass.

No Lua Torch runs on these machines (Debian dropped its lua-torch packages; torch7 needs a LuaJIT build), so
the ``.t7`` fixtures are written here, byte for byte in torch7's binary format (``File.lua`` ``writeObject``:
int32 type tags, reference indices, ``"V 1"`` + class name for Torch objects, tensors as sizes / strides /
1-based offset + storage, storages as an int64 count + raw little-endian data), with the objects nngraph
saves: an ``nn.gModule`` with ``forwardnodes`` (``nngraph.Node``s whose ``data`` holds ``module`` and
``mapindex``: parents' ``data`` at 1..n and the reverse map), ``modules``, ``innode``/``outnode`` and the
forward graph ``fg``. Modules are built as pose-hg-train's ``hg.lua`` and ``layers/Residual.lua`` build them
(``nn.Sequential{ConcatTable{convBlock, skip}, CAddTable}``; ``cudnn.`` convolutions and ReLUs as its
``nnlib``), in both layouts: today's ``hg.lua`` (a residual after each hourglass) and the earlier revision
the released ``umich-stacked-hourglass.t7`` reportedly comes from (none).

The reference heatmaps come from ``forward``: a NumPy (float64, NCHW) interpreter of the nngraph and nn
modules' documented semantics, run on the in-memory objects before they are written. It shares no code with
the converter (``hourglass_tf/weights/torch7.py`` reads the file; ``convert.py`` maps it onto Keras).

    .venv/bin/python tests/t7_reference.py   # rewrites tests/fixtures/weights/hg_t7_*.{t7,npz}
"""

import pathlib
import struct

import numpy as np

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "weights"


class Obj:
    """A Torch object to write: class name and fields."""

    def __init__(self, typename, **fields):
        self.typename = typename
        self.fields = fields


class Pairs:
    """A Lua table with arbitrary keys (nngraph's ``mapindex`` maps parents' data tables to indices)."""

    def __init__(self, pairs=()):
        self.pairs = list(pairs)

    def get(self, key):
        return next(v for k, v in self.pairs if k == key)


class Tensor:
    """A tensor to write as ``typename`` (``torch.FloatTensor`` / ``torch.CudaTensor``)."""

    def __init__(self, array, typename="torch.FloatTensor"):
        self.array = np.ascontiguousarray(array, dtype=np.float32)
        self.typename = typename


class Writer:
    def __init__(self):
        self.out = bytearray()
        self.index = {}
        self.keep = []

    def int32(self, v):
        self.out += struct.pack("<i", v)

    def int64(self, v):
        self.out += struct.pack("<q", v)

    def string(self, s):
        b = s.encode()
        self.int32(len(b))
        self.out += b

    def _ref(self, obj):
        """Writes the reference index; True when the object was written before."""
        if id(obj) in self.index:
            self.int32(self.index[id(obj)])
            return True
        self.index[id(obj)] = len(self.index) + 1
        self.keep.append(obj)
        self.int32(self.index[id(obj)])
        return False

    def write(self, v):
        if v is None:
            self.int32(0)
        elif isinstance(v, bool):
            self.int32(5)
            self.int32(int(v))
        elif isinstance(v, (int, float)):
            self.int32(1)
            self.out += struct.pack("<d", float(v))
        elif isinstance(v, str):
            self.int32(2)
            self.string(v)
        elif isinstance(v, Tensor):
            self.int32(4)
            if self._ref(v):
                return
            self.string("V 1")
            self.string(v.typename)
            a = v.array
            if a.size == 0:  # torch's empty tensor: no dimensions, no storage
                self.int32(0)
                self.int64(1)
                self.write(None)
                return
            self.int32(a.ndim)
            for n in a.shape:
                self.int64(n)
            for s in a.strides:
                self.int64(s // a.itemsize)
            self.int64(1)
            storage = Obj(v.typename.replace("Tensor", "Storage"))
            self.int32(4)
            self._ref(storage)
            self.string("V 1")
            self.string(storage.typename)
            self.int64(a.size)
            self.out += a.astype("<f4").tobytes()
        elif isinstance(v, Obj):
            self.int32(4)
            if self._ref(v):
                return
            self.string("V 1")
            self.string(v.typename)
            self.write(dict(v.fields))
        elif isinstance(v, (dict, list, Pairs)):
            self.int32(3)
            if self._ref(v):
                return
            pairs = (
                list(v.items()) if isinstance(v, dict) else v.pairs if isinstance(v, Pairs) else list(enumerate(v, 1))
            )
            self.int32(len(pairs))
            for key, value in pairs:
                self.write(key)
                self.write(value)
        else:
            raise TypeError(type(v))


# --- nn modules as torch7 saves them ------------------------------------------------------------------------

RNG = np.random.default_rng(7)


def _empty(cuda):
    return Tensor(np.zeros((0,)), "torch.CudaTensor" if cuda else "torch.FloatTensor")


def _t(array, cuda):
    return Tensor(array, "torch.CudaTensor" if cuda else "torch.FloatTensor")


def conv(n_in, n_out, k, stride=1, pad=0, cuda=False):
    fan_in = n_in * k * k
    return Obj(
        "cudnn.SpatialConvolution",
        nInputPlane=n_in,
        nOutputPlane=n_out,
        kW=k,
        kH=k,
        dW=stride,
        dH=stride,
        padW=pad,
        padH=pad,
        groups=1,
        weight=_t(RNG.normal(0, 1 / np.sqrt(fan_in), (n_out, n_in, k, k)), cuda),
        bias=_t(RNG.normal(0, 0.1, n_out), cuda),
        gradWeight=_empty(cuda),
        gradBias=_empty(cuda),
        output=_empty(cuda),
        gradInput=_empty(cuda),
        train=False,
        _type="torch.CudaTensor" if cuda else "torch.FloatTensor",
    )


def batchnorm(n, cuda=False, old_std=False, eps=1e-5):
    var = RNG.uniform(0.5, 2.0, n)
    fields = {
        "weight": _t(RNG.uniform(0.5, 1.5, n), cuda),
        "bias": _t(RNG.normal(0, 0.1, n), cuda),
        "running_mean": _t(RNG.normal(0, 0.1, n), cuda),
        "eps": eps,
        "momentum": 0.1,
        "affine": True,
        "train": False,
        "output": _empty(cuda),
        "gradInput": _empty(cuda),
    }
    if old_std:  # nn before mid-2016 kept 1 / sqrt(var + eps) as running_std
        fields["running_std"] = _t(1 / np.sqrt(var + eps), cuda)
    else:
        fields["running_var"] = _t(var, cuda)
    return Obj("nn.SpatialBatchNormalization", **fields)


def relu():
    return Obj("cudnn.ReLU", inplace=True, output=None, train=False)


def maxpool():
    return Obj("cudnn.SpatialMaxPooling", kW=2, kH=2, dW=2, dH=2, padW=0, padH=0, ceil_mode=False)


def upsample():
    return Obj("nn.SpatialUpSamplingNearest", scale_factor=2)


def caddtable(inplace=False):
    return Obj("nn.CAddTable", inplace=inplace)


def sequential(*mods):
    return Obj("nn.Sequential", modules=list(mods), train=False)


def residual(n_in, n_out, **kw):
    cuda, old = kw.get("cuda", False), kw.get("old_std", False)
    block = sequential(
        batchnorm(n_in, cuda, old),
        relu(),
        conv(n_in, n_out // 2, 1, cuda=cuda),
        batchnorm(n_out // 2, cuda, old),
        relu(),
        conv(n_out // 2, n_out // 2, 3, 1, 1, cuda=cuda),
        batchnorm(n_out // 2, cuda, old),
        relu(),
        conv(n_out // 2, n_out, 1, cuda=cuda),
    )
    skip = Obj("nn.Identity") if n_in == n_out else sequential(conv(n_in, n_out, 1, cuda=cuda))
    return sequential(Obj("nn.ConcatTable", modules=[block, skip]), caddtable(True))


# --- nngraph ------------------------------------------------------------------------------------------------


class Node:
    def __init__(self, module, parents):
        mapindex = Pairs()
        for i, p in enumerate(parents, 1):
            mapindex.pairs.append((i, p.data))
        for i, p in enumerate(parents, 1):
            mapindex.pairs.append((p.data, i))
        self.data = Pairs([("mapindex", mapindex), ("annotations", {})])
        if module is not None:
            self.data.pairs.insert(0, ("module", module))
        self.module = module
        self.parents = list(parents)


def hg_graph(num_stacks=2, filters=16, depth=4, joints=16, post_residual=True, cuda=False, old_std=False):
    """pose-hg-train's createModel() as nngraph nodes; returns (gModule Obj, forward node list)."""
    kw = {"cuda": cuda, "old_std": old_std}
    nodes = []

    def call(module, *parents):
        n = Node(module, parents)
        nodes.append(n)
        return n

    innode = call(None)
    innode.data.pairs.append(("input", {}))
    inp = call(Obj("nn.Identity"), innode)
    x = call(conv(3, 64, 7, 2, 3, cuda), inp)
    x = call(relu(), call(batchnorm(64, cuda, old_std), x))
    x = call(residual(64, 128, **kw), x)
    x = call(maxpool(), x)
    x = call(residual(128, 128, **kw), x)
    inter = call(residual(128, filters, **kw), x)

    def hourglass(n, x):
        up1 = call(residual(filters, filters, **kw), x)
        low1 = call(residual(filters, filters, **kw), call(maxpool(), x))
        low2 = hourglass(n - 1, low1) if n > 1 else call(residual(filters, filters, **kw), low1)
        low3 = call(residual(filters, filters, **kw), low2)
        return call(caddtable(), up1, call(upsample(), low3))

    outs = []
    for s in range(num_stacks):
        ll = hourglass(depth, inter)
        if post_residual:
            ll = call(residual(filters, filters, **kw), ll)
        ll = call(relu(), call(batchnorm(filters, cuda, old_std), call(conv(filters, filters, 1, cuda=cuda), ll)))
        out = call(conv(filters, joints, 1, cuda=cuda), ll)
        outs.append(out)
        if s < num_stacks - 1:
            ll_ = call(conv(filters, filters, 1, cuda=cuda), ll)
            out_ = call(conv(joints, filters, 1, cuda=cuda), out)
            inter = call(caddtable(), inter, ll_, out_)
    outnode = call(None, *outs)

    # the forward graph as nngraph saves it: Node objects with data and children, edges, topological order
    objs = {
        id(n): Obj("nngraph.Node", data=n.data, children=[], id=i, visited=False, marked=False)
        for i, n in enumerate(nodes)
    }
    edges = []
    for n in nodes:
        for p in n.parents:
            objs[id(p)].fields["children"].append(objs[id(n)])
            edges.append(Obj("graph.Edge", **{"from": objs[id(p)], "to": objs[id(n)]}))
    forward = [objs[id(n)] for n in nodes]  # built in a topological order
    fg = Obj("graph.Graph", nodes=forward, edges=edges)
    gmodule = Obj(
        "nn.gModule",
        fg=fg,
        forwardnodes=forward,
        innode=objs[id(innode)],
        outnode=objs[id(outnode)],
        nInputs=1,
        modules=[n.module for n in nodes if n.module is not None],
        output=[_empty(cuda) for _ in outs],
        gradInput=_empty(cuda),
        train=False,
        verbose=False,
    )
    return gmodule, nodes


# --- NumPy forward pass (float64, NCHW) -----------------------------------------------------------------------


def _arr(t):
    return t.array.astype(np.float64)


def _conv(m, x):
    f = m.fields
    w, b = _arr(f["weight"]), _arr(f["bias"])
    p, s, k = f["padH"], f["dH"], f["kH"]
    x = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    h = (x.shape[2] - k) // s + 1
    wd = (x.shape[3] - k) // s + 1
    y = np.zeros((x.shape[0], w.shape[0], h, wd))
    for i in range(k):
        for j in range(k):
            patch = x[:, :, i : i + s * (h - 1) + 1 : s, j : j + s * (wd - 1) + 1 : s]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, i, j])
    return y + b[None, :, None, None]


def run_module(m, x):
    kind = m.typename.split(".")[-1]
    f = m.fields
    if kind == "SpatialConvolution":
        return _conv(m, x)
    if kind == "SpatialBatchNormalization":
        c = lambda a: a[None, :, None, None]  # noqa: E731
        inv = _arr(f["running_std"]) if "running_std" in f else 1 / np.sqrt(_arr(f["running_var"]) + f["eps"])
        return (x - c(_arr(f["running_mean"]))) * c(inv) * c(_arr(f["weight"])) + c(_arr(f["bias"]))
    if kind == "ReLU":
        return np.maximum(x, 0)
    if kind == "SpatialMaxPooling":
        n, ch, h, w = x.shape
        return x.reshape(n, ch, h // 2, 2, w // 2, 2).max(axis=(3, 5))
    if kind == "SpatialUpSamplingNearest":
        return x.repeat(2, axis=2).repeat(2, axis=3)
    if kind == "CAddTable":
        return sum(x)
    if kind == "Identity":
        return x
    if kind == "Sequential":
        for sub in f["modules"]:
            x = run_module(sub, x)
        return x
    if kind == "ConcatTable":
        return [run_module(sub, x) for sub in f["modules"]]
    raise NotImplementedError(kind)


def forward(nodes, image_nchw):
    """Runs the graph: each node gets its parent's output, or the list of its parents' outputs in mapindex order."""
    values = {}
    for n in nodes:
        if not n.parents:
            values[id(n)] = image_nchw
            continue
        inputs = [values[id(p)] for p in n.parents]
        x = inputs[0] if len(inputs) == 1 else inputs
        values[id(n)] = run_module(n.module, x) if n.module is not None else x
    return values[id(nodes[-1])]  # the outnode: the heatmaps of every stack


def make(name, size=64, **kw):
    gmodule, nodes = hg_graph(**kw)
    image = np.random.default_rng(3).random((1, size, size, 3)).astype(np.float32)
    heatmaps = forward(nodes, image.transpose(0, 3, 1, 2).astype(np.float64))
    heatmaps = heatmaps if isinstance(heatmaps, list) else [heatmaps]  # one output: nngraph returns it bare
    heatmaps = np.stack([h.transpose(0, 2, 3, 1) for h in heatmaps]).astype(np.float32)
    writer = Writer()
    writer.write(gmodule)
    (FIXTURES / f"{name}.t7").write_bytes(bytes(writer.out))
    np.savez(FIXTURES / f"{name}.npz", image=image, heatmaps=heatmaps)
    print(name, len(writer.out), "bytes", heatmaps.shape, float(np.abs(heatmaps).max()))


if __name__ == "__main__":
    make("hg_t7_2stack", num_stacks=2, post_residual=True)
    make("hg_t7_1stack_umich", num_stacks=1, post_residual=False, cuda=True, old_std=True, depth=2)
