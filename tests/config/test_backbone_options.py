"""load_backbone's options come from one place (RunConfig.backbone_options): the run and the bench alike."""
from showdown.config.run_config import RunConfig
from showdown.models.backbones import load_backbone


def test_every_backbone_setting_of_the_run_reaches_the_loader(tmp_path):
    weights = tmp_path / "w.safetensors"
    config = RunConfig(weights={"mobilenet_v2": str(weights)}, weights_dir=str(tmp_path), pretrained=False,
                       allow_random_init=True, image_size=64, pool_stages=2)
    options = config.backbone_options("mobilenet_v2")
    assert options == {"weights_file": str(weights), "weights_dir": str(tmp_path), "pretrained": False,
                       "allow_random_init": True, "image_size": 64, "pool_stages": 2}
    assert config.backbone_options("resnet18")["weights_file"] is None
    backbone = load_backbone("mobilenet_v2", **options)
    assert backbone.pool_stages == 2 and backbone.preprocessing.input_size == (3, 64, 64)
