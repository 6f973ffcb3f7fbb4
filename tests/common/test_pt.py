"""common/pt.py reads what torch.save writes, without torch: every tensor equal to torch.load's,
bit for bit, containers and numbers as pickled; anything else refused by name."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from common.config import load_config
from common.pt import PtError, read_pt
from torchref.model import SeizureDetector


def assert_same(ours, theirs, where="") -> None:
    """ours (read_pt) against torch.load's object, recursively; tensors exactly."""
    if isinstance(theirs, torch.Tensor):
        expected = theirs.detach().float().numpy() if theirs.dtype == torch.bfloat16 else theirs.detach().numpy()
        assert isinstance(ours, np.ndarray) and ours.dtype == expected.dtype and ours.shape == expected.shape, where
        np.testing.assert_array_equal(ours, expected, err_msg=where)
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


def test_foreign_objects_and_non_zip_files_are_refused_by_name(tmp_path):
    torch.save({"weights": torch.ones(1), "object": Custom()}, tmp_path / "c.pt")
    with pytest.raises(PtError, match=r"c\.pt: holds a pickled .*Custom"):
        read_pt(tmp_path / "c.pt")
    (tmp_path / "d.pt").write_bytes(b"not a zip archive")
    with pytest.raises(PtError, match=r"d\.pt: not a PyTorch zip checkpoint"):
        read_pt(tmp_path / "d.pt")


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
