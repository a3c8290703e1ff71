"""LitServe's request and response schemas (``litserve.schema``), for ``import litkit as ls``:
``litkit.schema.image`` holds ``ImageInput`` and ``ImageOutput`` (pydantic models; Pillow to read
and write the images)."""
