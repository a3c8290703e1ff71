"""Images in JSON, as LitServe's ``litserve.schema.image``: ``ImageInput`` takes a base64 string
(``{"image_data": "..."}``) and gives a PIL image; ``ImageOutput`` sends a PIL image as base64 PNG.

``def decode_request(self, request: ImageInput)`` validates the body into one (a 422 when the text
is not base64). pydantic is needed to import this module, Pillow to read or write an image.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Optional

from pydantic import BaseModel, field_serializer, model_validator

__all__ = ["ImageInput", "ImageOutput"]


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("ImageInput and ImageOutput need Pillow to read and write images: pip install Pillow") from None
    return Image


class ImageInput(BaseModel):
    """A base64-encoded image in ``image_data`` (a subclass may add more such fields)."""

    image_data: Optional[str] = None

    @model_validator(mode="after")
    def _each_field_is_base64(self) -> "ImageInput":
        for name, value in self.model_dump().items():
            if value:
                try:
                    base64.b64decode(value)
                except binascii.Error:
                    raise ValueError(f"{name} is not a valid base64 string") from None
        return self

    def get_image(self, key: Optional[str] = None) -> Any:
        """The image in field ``key`` (default ``image_data``) as a ``PIL.Image.Image``.

        Raises:
            ValueError: the field is empty, or its bytes are not an image Pillow can read.
        """
        name = key or "image_data"
        data = self.model_dump().get(name)
        if not data:
            raise ValueError(f"Missing image data for key '{name}'")
        image = _pillow()
        try:
            return image.open(io.BytesIO(base64.b64decode(data)))
        except Exception as error:  # noqa: BLE001 - PIL.UnidentifiedImageError and friends
            raise ValueError(f"Error loading image from decoded data: {error}") from None


class ImageOutput(BaseModel):
    """A PIL image, sent as ``{"image": "<base64 PNG>"}``."""

    image: Any

    @field_serializer("image")
    def _as_base64_png(self, image: Any, _info: Any) -> str:
        if not isinstance(image, _pillow().Image):
            raise TypeError(f"ImageOutput.image must be a PIL Image, got {type(image).__name__}")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return base64.b64encode(buffer.getvalue()).decode("ascii")
