"""The demos run end to end and write their PNGs (the README's main one in the default run)."""
import pytest


def test_glm_demo_prints_table_and_writes_png(tmp_path, capsys, load_demo):
    demo = load_demo("glm_demo")
    out = tmp_path / "demo.png"
    demo.main(["--d", "300", "--seeds", "2", "--iterations", "4", "--out", str(out)])
    text = capsys.readouterr().out
    assert "SE mse" in text and len([line for line in text.splitlines() if line.strip()[:1].isdigit()]) == 5
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_bayes_optimal_demo_writes_its_figures(tmp_path, load_demo):
    demo = load_demo("bayes_optimal_curves")
    demo.main(["--out", str(tmp_path), "--d", "300", "--seeds", "1"])
    names = {p.name for p in tmp_path.glob("*.png")}
    assert names == {"perceptron_gaussian.png", "perceptron_rademacher.png", "phase_retrieval.png",
                     "compressed_sensing_phase_diagram.png"}


@pytest.mark.slow
@pytest.mark.parametrize("name, argv", [
    ("committee_demo", ["--alphas", "1.0,3.0", "--d", "300", "--seeds", "1", "--iterations", "40"]),
    ("multi_index_demo", ["--d", "300", "--seeds", "1", "--iterations", "5"]),
    ("attention_demo", ["--d", "200", "--seeds", "1", "--iterations", "3", "--nodes", "8"]),
])
def test_multi_index_demos_print_and_write_png(tmp_path, capsys, load_demo, name, argv):
    out = tmp_path / f"{name}.png"
    load_demo(name).main(argv + ["--out", str(out)])
    assert "wrote" in capsys.readouterr().out
    assert out.read_bytes()[:4] == b"\x89PNG"
