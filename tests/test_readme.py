"""The README's Deploy commands, as written, in their order, on what `make demo` leaves: a demo-like folder
(`demo/run` with a segmenter and a stage-1 checkpoint of the demo's config, `demo/data` made by the synthetic
generator with its `labels_val.csv`, `demo/images` copied as the demo copies them). The networks are the
tests' tiny stand-ins, so this takes seconds instead of the demo's minutes; the commands, paths and outputs
are the README's."""
from __future__ import annotations

import importlib.util
import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
pytest.importorskip("onnxruntime.quantization")
pytest.importorskip("onnxscript")


def _tiny_models():
    name = "aesipe_tests_tiny_models"  # the name the export/infer conftests give it: one module, one cache
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "export" / "tiny_models.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def deploy_commands(readme: str) -> list[list[str]]:
    """The README's Deploy block, one argv per command (continuation lines joined, comments dropped)."""
    section = readme.split("\n## Deploy\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line, comments=True) for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _demo_like(root: Path, tiny) -> None:
    from aesipe.config import save_config
    from aesipe.data import open_dataset
    from aesipe.data.synth import generate
    from aesipe.train.demo import _example_images, demo_config

    demo = Path("demo")  # relative, as `make demo` writes it (and its config.toml records it)
    generate(root / demo / "data", 8, 6, 48, 0, 3, progress=False)
    cfg = demo_config(demo)
    classes = open_dataset(cfg.data, cfg.data.eval_split).class_names
    run = root / demo / "run"
    tiny.save_checkpoint(run / "seg" / "final.pt", "deeplabv3", tiny.TinySegmenter(len(classes) - 1), cfg, classes)
    tiny.save_checkpoint(run / "stage1" / "final.pt", "aesipe", tiny.TinyAesipe(len(classes) - 1), cfg, classes)
    save_config(cfg, run / "config.toml")
    _example_images(Path(cfg.data.root), open_dataset(cfg.data, cfg.data.eval_split).ids, root / demo / "images")


@pytest.mark.slow  # four exports (one quantised) and three labelling runs: about a minute on 2 busy cores
def test_readme_deploy_commands_run_in_order_after_the_demo(tmp_path, monkeypatch):
    from aesipe.export.cli import app as export_app
    from aesipe.infer.cli import app as label_app

    commands = deploy_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert [argv[0] for argv in commands] == ["aesipe-export", "aesipe-export", "aesipe-label", "aesipe-export",
                                              "aesipe-label", "aesipe-label"]
    outputs = [argv[3] for argv in commands if argv[0] == "aesipe-label"]
    assert len(set(outputs)) == len(outputs)  # every model labels into its own folder
    tiny = _tiny_models()
    monkeypatch.chdir(tmp_path)  # the folder `make demo` ran in
    monkeypatch.setenv("AESIPE_CACHE_DIR", str(tmp_path / "cache"))
    _demo_like(tmp_path, tiny)
    runner = CliRunner()
    with tiny.builders_installed():
        for argv in commands:
            app = export_app if argv[0] == "aesipe-export" else label_app
            result = runner.invoke(app, argv[1:])
            assert result.exit_code == 0, f"{shlex.join(argv)}\n{result.output}"
            assert "redone" not in result.output, result.output  # no folder holds another model's masks
            if "--int8" in argv:  # the float32 file of the first command is quantised, not traced again
                assert "tracing" not in result.output, result.output
    export = tmp_path / "demo" / "run" / "export"
    assert {p.name for p in export.iterdir()} == {"segmenter.onnx", "segmenter_int8.onnx", "pseudo_labeller.onnx"}
    images = sorted(p.stem for p in (tmp_path / "demo" / "images").iterdir())
    for folder in outputs:
        assert sorted(p.stem for p in (tmp_path / folder / "masks").iterdir()) == images, folder
    review = tmp_path / "labels" / "review"
    for name in ("sheet.html", "annotations.json", "labelmap.txt", "review.csv"):
        assert (review / name).is_file(), name
    assert len(list((tmp_path / "labels" / "pseudo" / "overlays").iterdir())) == len(images)
