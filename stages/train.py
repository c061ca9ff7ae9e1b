"""DVC stage: train one registered model (train@<model>) on the preprocessing cache."""

import argparse
from pathlib import Path

from gmvol.config import from_mapping, read_yaml
from gmvol.models import model_config_from_dict
from gmvol.training.loop import TrainConfig, train_model

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", required=True, help="a key of the params' `models` section")
    parser.add_argument("--train", type=Path, required=True, help="split/train.csv")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="model directory")
    parser.add_argument("--curves", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args()
    params = read_yaml(args.params)
    model_section = dict(params["models"][args.model])
    overrides = model_section.pop("train", {})  # per-model training settings win
    section = {k: v for k, v in params["train"].items() if k != "models"} | overrides
    cfg = from_mapping(TrainConfig, section, "train")
    model_cfg = model_config_from_dict(model_section)
    metrics = train_model(model_cfg, cfg, args.train, args.cache, args.out, args.curves, args.metrics)
    if not metrics:  # a node other than 0 of a multi-node DDP job: node 0 wrote the outputs
        raise SystemExit(0)
    print(f"train@{args.model}: valid loss {metrics['valid_loss']:.4f} "
          f"(mean predictor {metrics['valid_loss_mean_predictor']:.4f}), best epoch {metrics['best_epoch']}")
