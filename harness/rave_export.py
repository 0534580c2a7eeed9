"""Make a RAVE TorchScript export with the `acids-rave` package, as `rave export --streaming` does.

Runs in the RAVE environment (`.venv-rave`, made by scripts/setup-rave.sh), not in ciel's: the
package pins libraries ciel's environment cannot hold. The weights are untrained (seeded): what
the tests need is the file format, the methods and the streaming state of a real export.

    .venv-rave/bin/python harness/rave_export.py OUT.ts [--config v2_small] [--latent 8] [--seed 0]

`--latent` sets how many latent dimensions the export keeps (an export keeps those whose
cumulative explained variance reaches its fidelity; an untrained model has no variance to
explain, so the fidelity curve is written here).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--config", default="v2_small", help="a configuration shipped with acids-rave (rave/configs)")
    ap.add_argument("--latent", type=int, default=8, help="latent dimensions of the export (a power of two)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--causal", action="store_true", help="add the causal configuration (lower latency)")
    args = ap.parse_args()
    logging.disable(logging.ERROR)   # gin reports a search path it then finds

    import cached_conv as cc
    import gin
    import torch

    sys.argv = [sys.argv[0], "--run", "unused"]   # scripts.export declares absl flags at import
    import rave
    import scripts.export as export

    cc.use_cached_conv(True)                       # the streaming export nn~ plays
    configs = Path(rave.__file__).parent / "configs"
    files = [str(configs / f"{args.config}.gin")] + ([str(configs / "causal.gin")] if args.causal else [])
    gin.add_config_file_search_path(str(configs.parent))
    gin.parse_config_files_and_bindings(files, [])
    torch.manual_seed(args.seed)
    model = rave.RAVE()
    model.eval()
    fidelity = torch.ones_like(model.fidelity)                                  # (latent_size,)
    fidelity[:args.latent] = torch.linspace(0.3, 0.9, args.latent)
    model.fidelity.copy_(fidelity)
    for m in model.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    scripted = export.VariationalScriptedRAVE(pretrained=model, channels=None, fidelity=0.95, target_sr=None,
                                              prior=None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    scripted.export_to_ts(str(args.out))
    print(f"{args.out} sr={model.sr} decode_params={scripted.decode_params.tolist()}")


if __name__ == "__main__":
    main()
