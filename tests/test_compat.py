"""The one torchvision import: works under CPU torch with the CUDA torchvision wheel, and is a no-op otherwise."""

import subprocess
import sys


def test_import_torchvision_gives_working_models():
    from actionray.compat import import_torchvision

    torchvision = import_torchvision()
    model = torchvision.models.resnet18(num_classes=3)
    assert model.fc.out_features == 3


def test_import_torchvision_is_idempotent():
    from actionray.compat import import_torchvision

    assert import_torchvision() is import_torchvision()


def test_only_the_missing_op_error_is_caught():
    # A fresh interpreter: if plain `import torchvision` works there, compat must leave torch.library untouched;
    # if it fails, it must fail with exactly the error compat handles.
    probe = "import torchvision"
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    script = (
        "from actionray import compat\n"
        "tv = compat.import_torchvision()\n"
        "print('patched' if compat._library_handle is not None else 'untouched')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    if plain.returncode == 0:
        assert result.stdout.strip() == "untouched"
    else:
        assert "torchvision::nms does not exist" in plain.stderr
        assert result.stdout.strip() == "patched"
