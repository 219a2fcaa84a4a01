"""Training learned potentials: co-training a fast/slow pair (Fu et al., arXiv 2310.13756)
and its single-model baseline (`cotrain`), their YAML configs (`config`), losses and error
statistics (`losses`), frames and mini-batches (`batches`)."""

from .config import TrainConfig, config_from_dict, load_config


def train(config, resume: bool = False, only=None, quiet: bool = False, callback=None):
    """`cotrain.train` (imported on first use: it pulls in e3nn and matplotlib)."""
    from .cotrain import train as _train

    return _train(config, resume=resume, only=only, quiet=quiet, callback=callback)


__all__ = ["TrainConfig", "config_from_dict", "load_config", "train"]
