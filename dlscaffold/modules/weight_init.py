"""Weight initialisation shared by the size-driven modules.

Kaiming (He) normal initialisation for convolution, transposed-convolution and linear weights,
with the gain of the LeakyReLU that follows them (slope ``LEAKY_RELU_SLOPE``), so activations
keep their scale through a deep stack; biases 0; BatchNorm weight 1 and bias 0. This is the older
deep_learning tool's choice, except that it used the plain-ReLU gain for LeakyReLU(0.1) layers. The
last layer of a stack (linear unless ``nonlinear=True``) gets the same rule, which keeps the
code to one rule at the price of a slightly larger initial output scale.
"""

from __future__ import annotations

from torch import nn

# The activation between layers; its slope sets the Kaiming gain, so both live here.
LEAKY_RELU_SLOPE = 0.1

_FORWARD = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_TRANSPOSED = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def init_weights(module: nn.Module) -> None:
    """Initialise every conv, transposed-conv, linear and BatchNorm layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, _FORWARD + _TRANSPOSED):
            # torch reads a transposed weight (in, out, *kernel) the other way round, so there
            # "fan_out" is in_channels * kernel elements: the fan-in of the upsampling layer.
            mode = "fan_out" if isinstance(layer, _TRANSPOSED) else "fan_in"
            nn.init.kaiming_normal_(layer.weight, a=LEAKY_RELU_SLOPE, mode=mode, nonlinearity="leaky_relu")
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS):
            nn.init.ones_(layer.weight)
            nn.init.zeros_(layer.bias)
