"""One test class run over every registered model: shapes, odd sizes, backward, modes, save/load, parameter count."""
import io

import pytest
import torch

import rtseg
from rtseg.registry import get_entry

MODELS = rtseg.list_models()


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module", params=MODELS)
def built(request):
    name = request.param
    return name, rtseg.create_model(name, num_classes=19)


class TestEveryModel:
    def test_parameter_count_matches_registry(self, built):
        name, model = built
        entry = get_entry(name)
        assert entry.expected_params is not None, f"{name} declares no expected parameter count"
        assert n_params(model) == entry.expected_params

    def test_output_shape_360x480(self, built):
        name, model = built
        model.eval()
        with torch.inference_mode():
            out = model(torch.randn(1, 3, 360, 480))
        s = model.output_scale
        assert out.shape == (1, 19, 360 * s, 480 * s)
        assert torch.isfinite(out).all()

    def test_odd_size_is_padded_and_cropped(self, built):
        name, model = built
        model.eval()
        with torch.inference_mode():
            out = model(torch.randn(1, 3, 77, 101))
        s = model.output_scale
        assert out.shape == (1, 19, 77 * s, 101 * s)

    def test_backward_reaches_every_parameter(self, built):
        name, model = built
        model.train()
        out = model(torch.randn(2, 3, 64, 96))
        target = torch.randint(0, 19, (2, out.shape[2], out.shape[3]))
        loss = torch.nn.functional.cross_entropy(out, target)
        model.zero_grad(set_to_none=True)
        loss.backward()
        unused = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not unused, f"parameters that receive no gradient: {unused[:5]}"
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    def test_eval_mode_is_deterministic(self, built):
        name, model = built
        model.eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.inference_mode():
            assert torch.equal(model(x), model(x))

    def test_state_dict_round_trip(self, built):
        name, model = built
        model.eval()
        buf = io.BytesIO()
        torch.save(model.state_dict(), buf)
        buf.seek(0)
        torch.manual_seed(123)
        fresh = rtseg.create_model(name, num_classes=19).eval()
        fresh.load_state_dict(torch.load(buf, weights_only=True), strict=True)
        x = torch.randn(1, 3, 64, 96)
        with torch.inference_mode():
            assert torch.equal(model(x), fresh(x))

    def test_class_count_option(self, built):
        name, _ = built
        model = rtseg.create_model(name, num_classes=5).eval()
        with torch.inference_mode():
            assert model(torch.randn(1, 3, 64, 64)).shape[1] == 5

    def test_two_classes_forward_and_backward(self, built):
        """Binary segmentation: ESPNet-based blocks once gave branches num_classes // 5 = 0 channels."""
        name, _ = built
        model = rtseg.create_model(name, num_classes=2).train()
        out = model(torch.randn(2, 3, 64, 64))
        assert out.shape[:2] == (2, 2)
        target = torch.randint(0, 2, (2, out.shape[2], out.shape[3]))
        torch.nn.functional.cross_entropy(out, target).backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.eval()
        with torch.inference_mode():
            assert model(torch.randn(1, 3, 48, 80)).shape[:2] == (1, 2)
