"""common/pt.py reads what torch.save writes, without torch: every tensor equal to torch.load's,
bit for bit, containers and numbers as pickled; anything else refused by name."""

from __future__ import annotations

import collections

import ml_dtypes
import numpy as np
import pytest
import torch

from common.config import load_config
from common.pt import PtError, read_pt, torch_compatible
from torchref.model import SeizureDetector


def assert_same(ours, theirs, where="") -> None:
    """ours (read_pt) against torch.load's object, recursively; tensors exactly."""
    if isinstance(theirs, torch.Tensor):
        bf16 = theirs.dtype == torch.bfloat16  # numpy has none: ml_dtypes', the same 16 bits
        expected = theirs.detach().contiguous().view(torch.int16).numpy() if bf16 else theirs.detach().numpy()
        dtype = np.dtype(ml_dtypes.bfloat16) if bf16 else expected.dtype
        assert isinstance(ours, np.ndarray) and ours.dtype == dtype and ours.shape == expected.shape, where
        np.testing.assert_array_equal(ours.view(np.int16) if bf16 else ours, expected, err_msg=where)
    elif isinstance(theirs, dict):
        assert type(ours) is type(theirs) and list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list | tuple):
        assert type(ours) is type(theirs) and len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    else:
        assert ours == theirs, where


def test_tensors_of_every_kind(tmp_path):
    g = torch.Generator().manual_seed(0)
    obj = {
        "float32": torch.randn(2, 3, generator=g), "float64": torch.randn(4, dtype=torch.float64, generator=g),
        "float16": torch.randn(5, generator=g).half(), "bfloat16": torch.randn(6, generator=g).bfloat16(),
        "int64": torch.arange(7), "uint8": torch.arange(8, dtype=torch.uint8), "bool": torch.tensor([True, False]),
        "transposed": torch.randn(4, 5, generator=g).t(), "slice": torch.randn(10, generator=g)[2:7],
        "scalar": torch.tensor(3.5), "empty": torch.zeros(0, 3), "shared": None,
        "parameter": torch.nn.Parameter(torch.ones(2)), "numbers": [1, 2.5, "x", None, True, (3, 4)],
        "ordered": collections.OrderedDict(b=torch.ones(1), a=2),
    }
    obj["shared"] = obj["float32"][1]  # a view into another tensor's storage
    torch.save(obj, tmp_path / "a.pt")
    assert_same(read_pt(tmp_path / "a.pt"), torch.load(tmp_path / "a.pt", weights_only=True))


def test_a_state_dict_and_an_optimizer_checkpoint(tmp_path):
    config = load_config("configs/tiny.yaml")
    model = SeizureDetector(config.model, 0)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, config.model.n_chans, config.window_samples))[0].sum().backward()
    optimizer.step()
    saved = {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
             "epoch": 4, "best_metric": np.float64(0.75), "config": {"model": {"architecture": "v3"}},
             "generator": torch.Generator().manual_seed(3).get_state()}
    torch.save(saved, tmp_path / "b.pt")
    ours = read_pt(tmp_path / "b.pt")
    assert_same({k: v for k, v in ours.items() if k != "best_metric"},
                {k: v for k, v in torch.load(tmp_path / "b.pt", weights_only=False).items() if k != "best_metric"})
    assert ours["best_metric"] == 0.75 and isinstance(ours["best_metric"], np.floating)


class Custom:
    pass


def test_bfloat16_is_read_as_bfloat16_and_goes_back_to_torch_exactly(tmp_path):
    """bf16 tensors were widened to float32 on read, so parity.convert said "dtype float32 as
    read" and the localiser no "read as float32" for a bf16 file, where float16 got both. They
    keep their dtype now (ml_dtypes' bfloat16, the same bits), and torch takes them as float32."""
    bf16 = torch.tensor([1.0, -2.5, 3.0e38, float("nan"), float("-inf"), 1.1754944e-38]).bfloat16()
    torch.save({"w": bf16}, tmp_path / "bf16.pt")
    ours = read_pt(tmp_path / "bf16.pt")["w"]
    assert ours.dtype.name == "bfloat16"
    assert ours.view(np.uint16).tolist() == bf16.view(torch.int16).numpy().view(np.uint16).tolist()
    back = torch.from_numpy(torch_compatible(ours))
    assert back.dtype == torch.float32 and torch.equal(back.bfloat16().view(torch.int16), bf16.view(torch.int16))
    assert torch_compatible(np.float16([1, 2])).dtype == np.float16  # any other dtype as it is


def test_foreign_objects_are_refused_by_name(tmp_path):
    torch.save({"weights": torch.ones(1), "object": Custom()}, tmp_path / "c.pt")
    with pytest.raises(PtError, match=r"c\.pt: holds a pickled .*Custom"):
        read_pt(tmp_path / "c.pt")


def test_a_later_original_checkpoints_rng_state_is_read(tmp_path):
    """brain-go-brr's later save_checkpoint (CHECKPOINT_VERSION 3.9.0) stores rng_state with
    np.random.get_state() and random.getstate(): a numpy array in the pickle refused the whole file."""
    import random

    state = np.random.RandomState(3).get_state()
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "rng_state": {
        "torch": torch.get_rng_state(), "numpy": state, "python": random.Random(1).getstate()}}, tmp_path / "best.pt")
    read = read_pt(tmp_path / "best.pt")
    kind, keys, *rest = read["rng_state"]["numpy"]
    assert (kind, *rest) == (state[0], *state[2:]) and keys.dtype == np.uint32
    np.testing.assert_array_equal(keys, state[1])
    assert read["rng_state"]["python"] == random.Random(1).getstate()
    np.testing.assert_array_equal(read["model_state_dict"]["w"], np.ones(2, np.float32))
    # an array whose bytes do not fit its shape (a damaged file): numpy's ValueError, named as the file's
    class Damaged:
        def __reduce__(self):
            reconstruct = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, as an array pickles
            return reconstruct, (np.ndarray, (0,), b"b"), (1, (10,), np.dtype("float32"), False, b"\0" * 8)

    torch.save({"rng_state": {"numpy": ("MT19937", Damaged())}}, tmp_path / "damaged.pt")
    assert _refusal(tmp_path / "damaged.pt").startswith(f"{tmp_path / 'damaged.pt'}: unreadable (ValueError: ")


def _crafted(path, size: tuple, stored: int, numel: int, stride: tuple | None = None) -> None:
    """A .pt whose one tensor has shape `size` over a float32 storage that declares `numel`
    elements and holds `stored`: what a damaged or hand-made file can claim."""
    import io
    import pickle
    import zipfile

    class Storage:
        pass

    class Tensor:
        def __reduce__(self):
            strides = (1,) * len(size) if stride is None else stride
            return torch._utils._rebuild_tensor_v2, (Storage(), 0, size, strides, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            return ("storage", torch.FloatStorage, "0", "cpu", numel) if isinstance(obj, Storage) else None

    data = io.BytesIO()
    Pickler(data, protocol=2).dump({"w": Tensor()})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data.getvalue())
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/data/0", np.arange(stored, dtype=np.float32).tobytes())


def test_a_tensor_reaching_past_its_storage_is_refused_as_torch_refuses_it(tmp_path):
    """The reader read whatever memory lay past a storage whose tensor claims more elements than it
    holds (4,096 of 4: 16 KB of the process's heap as weights); torch refuses the same file."""
    _crafted(tmp_path / "long.pt", (4096,), stored=4, numel=4)
    with pytest.raises(RuntimeError):
        torch.load(tmp_path / "long.pt", weights_only=True)  # the oracle
    assert "a tensor of shape (4096,), strides (1,) from element 0 does not lie within its storage of 4 elements: " \
           "the file is damaged" in _refusal(tmp_path / "long.pt")
    _crafted(tmp_path / "short.pt", (4,), stored=2, numel=4)  # the storage file itself cut short
    assert _refusal(tmp_path / "short.pt") == (f"{tmp_path / 'short.pt'}: storage 0 holds 2 of its 4 elements: the "
                                               "file is truncated or damaged; copy or save it again")
    _crafted(tmp_path / "strides.pt", (2, 2), stored=4, numel=4, stride=(1,))  # fewer strides than sizes
    assert "a tensor of shape (2, 2), strides (1,) from element 0 does not lie within" in _refusal(tmp_path / "strides.pt")
    _crafted(tmp_path / "fits.pt", (4,), stored=4, numel=4)
    np.testing.assert_array_equal(read_pt(tmp_path / "fits.pt")["w"], np.arange(4, dtype=np.float32))
    torch.save({"empty": torch.zeros(0, 3)}, tmp_path / "empty.pt")
    assert read_pt(tmp_path / "empty.pt")["empty"].shape == (0, 3)


def _refusal(path) -> str:
    with pytest.raises(PtError) as info:
        read_pt(path)
    return str(info.value)


def test_a_file_that_is_no_zip_is_refused_with_the_fix_for_what_it_is(tmp_path, monkeypatch):
    """Every file zip could not open got the legacy-format advice, re-saving through
    torch.load(..., weights_only=True), which fails on a truncated zip ("failed finding central
    directory") and on a file that is no checkpoint at all."""
    torch.save({"w": torch.ones(1000)}, tmp_path / "whole.pt")
    data = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    message = _refusal(tmp_path / "cut.pt")
    assert message.startswith(f"{tmp_path / 'cut.pt'}: a zip archive whose end, where zip keeps its central "
                              f"directory, is missing (zip: File is not a zip file; {len(data) // 2:,} bytes)")
    assert "copy or download it again" in message and "torch.load" not in message
    with pytest.raises(RuntimeError, match="central directory"):  # what the old advice ran into
        torch.load(tmp_path / "cut.pt", weights_only=True)

    (tmp_path / "notes.pt").write_text("this is not a checkpoint\n")
    np.save(tmp_path / "array.npy", np.zeros(3))
    (tmp_path / "array.npy").rename(tmp_path / "array.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "noise.pt").write_bytes(bytes(range(7, 40)))
    for name, what in (("notes", "a text file, starting 'this is not a checkpoint'"),
                       ("array", "a numpy array (.npy, np.save's)"), ("empty", "an empty file (0 bytes)"),
                       ("noise", "binary data of no kind this reader knows (first bytes 07 08 09 0a 0b 0c 0d 0e)")):
        assert _refusal(tmp_path / f"{name}.pt") == (f"{tmp_path / name}.pt: not a PyTorch checkpoint: {what}; point "
                                                     "it at the file torch.save wrote (.pt, .pth, .ckpt)")

    # a real legacy checkpoint, as brain-go-brr saves one (its config holds Path objects): the
    # advice is torch's re-save, and it runs
    import pathlib

    legacy = {"model_state_dict": {"w": torch.arange(3.0)}, "config": {"data_dir": pathlib.PosixPath("/data")}}
    torch.save(legacy, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    message = _refusal(tmp_path / "legacy.pt")
    assert message.startswith(f"{tmp_path / 'legacy.pt'}: a PyTorch checkpoint in the legacy format (torch < 1.6")
    command = message.split('python -c "')[1].removesuffix('"')
    monkeypatch.chdir(tmp_path)
    exec(command, {})
    resaved = read_pt(tmp_path / "new.pt")
    assert resaved["config"] == {"data_dir": "/data"} and resaved["model_state_dict"]["w"].tolist() == [0, 1, 2]


def test_pathlib_paths_in_a_saved_config_are_read_as_text(tmp_path):
    """brain-go-brr v2's save_checkpoint stores config.model_dump(), whose data_dir, cache_dir and
    output_dir are Path objects; a checkpoint saved on Windows holds WindowsPath, which no Linux
    Python can instantiate."""
    import pathlib
    import zipfile

    config = {"data": {"data_dir": pathlib.PosixPath("/data/tusz/edf"), "cache_dir": pathlib.PurePosixPath("cache")},
              "experiment": {"output_dir": pathlib.PureWindowsPath("C:\\runs", "v3")}}
    torch.save({"model_state_dict": {"w": torch.ones(2)}, "config": config}, tmp_path / "v2.pt")
    saved = read_pt(tmp_path / "v2.pt")
    assert saved["config"] == {"data": {"data_dir": "/data/tusz/edf", "cache_dir": "cache"},
                               "experiment": {"output_dir": "C:\\runs\\v3"}}
    # the same file as Windows writes it: the class is WindowsPath (protocol 2 names it as text)
    with zipfile.ZipFile(tmp_path / "v2.pt") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    pkl = next(name for name in members if name.endswith("/data.pkl"))
    members[pkl] = members[pkl].replace(b"\nPureWindowsPath\n", b"\nWindowsPath\n")
    assert b"pathlib\nWindowsPath\n" in members[pkl]
    with zipfile.ZipFile(tmp_path / "windows.pt", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    assert read_pt(tmp_path / "windows.pt")["config"]["experiment"]["output_dir"] == "C:\\runs\\v3"


def test_bytes_changed_after_writing_are_damage_naming_the_file(tmp_path):
    """A .pt of its full size whose tensor bytes changed (a copy gone wrong): zip's CRC check
    raised BadZipFile as a traceback from every command reading it."""
    torch.save({"w": torch.arange(1000.0)}, tmp_path / "w.pt")
    data = bytearray((tmp_path / "w.pt").read_bytes())
    at = bytes(data).index(np.arange(1000.0, dtype=np.float32)[500:502].tobytes())  # inside the stored tensor
    data[at] ^= 0xFF
    (tmp_path / "w.pt").write_bytes(bytes(data))
    with pytest.raises(PtError, match=rf"^{tmp_path / 'w.pt'}: damaged \(Bad CRC-32 for file .*\): its bytes were "
                                      "changed after it was written"):
        read_pt(tmp_path / "w.pt")
