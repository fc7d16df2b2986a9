"""``python -m pipeline.benchmark``: the comparison table and the micro-benchmarks, one Typer app.

    table     the model comparison from the training records and CV summaries (a DVC stage)
    rle       our RLE against the common Kaggle kernel; the largest-region clean-up against
              OpenCV on full masks
    models    parameters, forward and training-step speed of every model config
    predict   the inference engine against a naive loop
    gpu       training and end-to-end prediction speed of a GPU (or, tiny, a CPU)
"""

from __future__ import annotations

import typer

from pipeline.benchmark import engine_speed, gpu_report, model_speed, rle_speed, table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)

for module in (table, rle_speed, model_speed, engine_speed, gpu_report):
    module.register(app)  # each adds its command(s)

if __name__ == "__main__":
    app()
