"""Key -> shape tables of released state dicts, written out by hand from their public source."""


class Layout(dict):
    """A state dict's key -> shape, filled layer by layer as the public code declares them."""

    def linear(self, name: str, n_in: int, n_out: int) -> None:
        self[f"{name}.weight"] = (n_out, n_in)
        self[f"{name}.bias"] = (n_out,)

    def layer_norm(self, name: str, dim: int) -> None:
        self[f"{name}.weight"] = (dim,)
        self[f"{name}.bias"] = (dim,)
