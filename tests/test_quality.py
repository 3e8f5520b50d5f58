"""genart_jax.quality: its place below training, and the feature networks it picks."""

import subprocess
import sys


def test_quality_does_not_import_training():
    code = ("import sys, genart_jax.quality; "
            "print(sorted(m for m in sys.modules if m.startswith('genart_jax.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_results_file_refuses_another_network_under_the_same_feature_name(tmp_path):
    import json

    import pytest

    from genart_jax.classifier import ClassifierError
    from genart_jax.quality import check_comparable

    f = tmp_path / "eval.json"
    check_comparable(f, {"features": "digits classifier", "features_fingerprint": "a"})
    f.write_text(json.dumps({"features": "digits classifier", "features_fingerprint": "a",
                             "FID (digits classifier features)": 1.0}) + "\n"
                 + json.dumps({"step": 5, "neg_elbo_nats": 90.0}) + "\n")
    check_comparable(f, {"features": "digits classifier", "features_fingerprint": "a"})
    check_comparable(f, {"features": "digits SimCLR encoder", "features_fingerprint": "b"})
    check_comparable(f, {"step": 6})  # no metrics: nothing to compare
    with pytest.raises(ClassifierError, match="line 1 holds metrics in 'digits classifier' "
                                              "features of another network"):
        check_comparable(f, {"features": "digits classifier", "features_fingerprint": "c"})


def test_feature_network_choice_and_its_errors(tmp_path, monkeypatch):
    import pytest

    from genart_jax.classifier import ClassifierError
    from genart_jax.config import load_config
    from genart_jax.quality import feature_network

    monkeypatch.chdir(tmp_path)
    data = load_config("dcgan_digits", {"data.image_size": "16"}).data
    with pytest.raises(ClassifierError) as e:
        feature_network(data)
    assert "genart train-features --data digits --image-size 16 --channels 1" in str(e.value)
    assert "genart train-classifier --data digits" in str(e.value)
    with pytest.raises(ClassifierError, match="needs --extractor-params WEIGHTS.npz"):
        feature_network(data, extractor="inception")
    with pytest.raises(ClassifierError, match="no weights file"):
        feature_network(data, extractor="inception", extractor_params="none.npz")
    with pytest.raises(ClassifierError, match="no self-supervised encoder in runs/features_"):
        feature_network(data, extractor="selfsup")
