"""The speed switches change speed only: bf16-mixed keeps float32 likelihoods close to float32's,
and model.compile=true computes the same log-likelihoods with the same checkpoint keys."""

import pytest
import torch
from support import requires_data, tiny_model
from test_configs import one_training_step

from pixel_lightning.models import AutoregressiveImageModel


def test_bf16_autocast_keeps_float32_likelihoods():
    torch.manual_seed(0)
    model = tiny_model(channels=3, levels=8)
    x = torch.randint(0, 8, (4, 3, 4, 4))
    with torch.no_grad():
        exact = model.log_prob(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.log_prob(x)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, exact, rtol=2e-2, atol=0)  # bf16 logits: ~3 significant digits


@requires_data
def test_a_bf16_mixed_training_step_runs_through_the_pipeline(tmp_path):
    metrics = one_training_step(
        "paper_mnist_pixelcnn", tmp_path, ["trainer.precision=bf16-mixed", "model.net.layers=2", "model.net.hidden=8"]
    )
    assert 0 < metrics["train/loss"] < 1


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on a 2-core CPU
def test_compiled_net_gives_the_same_likelihoods_and_checkpoint_keys():
    torch.manual_seed(0)
    eager = tiny_model()
    compiled = AutoregressiveImageModel(**{k: eager.hparams[k] for k in ("net", "optimizer", "data")}, compile=True)
    compiled.load_state_dict(eager.state_dict())
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    x = torch.randint(0, 2, (3, 1, 4, 4))
    torch.testing.assert_close(compiled.log_prob(x), eager.log_prob(x), rtol=1e-5, atol=1e-5)
