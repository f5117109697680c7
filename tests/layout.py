"""Key -> shape tables of released state dicts, written out by hand from their public source."""


class Layout(dict):
    """A state dict's key -> shape, filled layer by layer as the public code declares them."""

    def linear(self, name: str, n_in: int, n_out: int) -> None:
        self[f"{name}.weight"] = (n_out, n_in)
        self[f"{name}.bias"] = (n_out,)

    def layer_norm(self, name: str, dim: int) -> None:
        self[f"{name}.weight"] = (dim,)
        self[f"{name}.bias"] = (dim,)

    def conv(self, name: str, n_in: int, n_out: int, kernel: int, bias: bool = True) -> None:
        self[f"{name}.weight"] = (n_out, n_in, kernel, kernel)
        if bias:
            self[f"{name}.bias"] = (n_out,)

    def batch_norm(self, name: str, dim: int) -> None:
        for buffer in ("weight", "bias", "running_mean", "running_var"):
            self[f"{name}.{buffer}"] = (dim,)
        self[f"{name}.num_batches_tracked"] = ()
