"""A notebook-driven deep-learning teaching library: a training loop built from scratch, step by step.

Modules:

- `miniai.accel`: Training in 16-bit floats where it is safe (autocast, loss scaling, skipping overflowed steps), channels-last and small convolutions as one matmul on the CPU, and the same with Hugging Face accelerate (device placement, mixed precision, gradient accumulation).
- `miniai.augment`: Per-image random flips, crops, resized crops, random erasing and random copying, done on a whole batch at once (on the GPU when there is one), and what they do against overfitting, measured; test-time augmentation; ensembles; dropout from scratch and test-time dropout; the flagship recipe.
- `miniai.averaging`: Two ways to smooth the path the weights take: an exponential moving average of the weights kept beside the model (EMA), and Lookahead's slow weights that pull the optimizer back every few steps. Both as callbacks, checked against the formulas and torch's `AveragedModel`, then measured on the flagship recipe.
- `miniai.distributed`: Training one model on several processes: each takes a share of every batch, the gradients are averaged across processes, and the result is the single-process run's. With torchrun, gloo on the CPU and nccl on CUDA.
- `miniai.fastpath`: For small models on a big GPU: the data kept on the device as uint8 and normalised there, no waiting for the GPU inside the loop, bf16 and channels-last, and each training step replayed as one CUDA graph.
- `miniai.resnet`: Deeper and wider CNNs; the residual block, which lets a deep CNN train as well as a shallow one (and its pre-activation variant); global average pooling; and a `summary` table of shapes, parameters and MFLOPs."""

__version__ = "0.1.0"

# Later lessons add methods to `Learner` with `@patch` (`save`/`load`, `summary`, `show_image_batch`/`capture_preds`).
# Python runs this file before any `miniai.<module>` is imported, so importing those modules here, in lesson order,
# gives every learner all of its methods whatever a notebook imports (`from miniai.learner import *` included).
from . import checkpoint, resnet, augment   # noqa: E402,F401  (05a, 10, 11)
