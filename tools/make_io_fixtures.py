"""Writes the small safetensors fixtures of tests/io with the reference Python
library (run with tools/.venv/bin/python from the repository root).

reference.safetensors  every dtype plora reads, values chosen so that the test
                       can state them by hand (exact in every dtype used).
writer_reference.safetensors  exactly the tensors and metadata the C++ test
                       hands to SafetensorsWriter, to compare the bytes.
rgb_7x5.png            a random 7 (wide) x 5 (high) RGB image, and
image_reference.safetensors  its pixels (U8, [h, w, c]), Pillow's resizes of
                       it (U8) and ViTImageProcessorPil's pixel_values (F32,
                       [c, h, w]) at two sizes (needs Pillow).
"""
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

OUT = Path("tests/data/io")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "f32": torch.tensor([[-1.0, -0.5, 0.0], [0.5, 1.0, 1.5]], dtype=torch.float32),
            # 1, -2.5, the largest half, the smallest subnormal half (2^-24)
            "f16": torch.tensor([1.0, -2.5, 65504.0, 2.0**-24], dtype=torch.float16),
            "bf16": torch.tensor([[1.0, -2.5], [3.140625, 2.0**-10]], dtype=torch.bfloat16),
            "f64": torch.tensor([0.25, -8.0], dtype=torch.float64),
            "conv": torch.arange(8, dtype=torch.float32).reshape(2, 1, 2, 2),
            "scalar": torch.tensor(3.5, dtype=torch.float32),
            "empty": torch.zeros((0, 4), dtype=torch.float32),
            "i64": torch.tensor([-1, 0, 1 << 40], dtype=torch.int64),
            "i32": torch.tensor([[7, -7]], dtype=torch.int32),
            "u8": torch.tensor([0, 255], dtype=torch.uint8),
            "bool": torch.tensor([True, False, True]),
        },
        str(OUT / "reference.safetensors"),
        metadata={"format": "pt", "note": "plora fixture"},
    )
    save_file(
        {
            "weight": torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float32),
            "bias": torch.tensor([0.5, -0.5, 0.25], dtype=torch.float32),
            "step": torch.tensor([42], dtype=torch.int64),
        },
        str(OUT / "writer_reference.safetensors"),
        metadata={"format": "pt"},
    )

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="RGB")
    image.save(OUT / "rgb_7x5.png")
    tensors = {"rgb": torch.from_numpy(pixels.copy())}
    for name, (h, w), resample in [
        ("bilinear_3x4", (3, 4), Image.BILINEAR),  # both axes down
        ("bilinear_9x11", (9, 11), Image.BILINEAR),  # both axes up
        ("bilinear_2x13", (2, 13), Image.BILINEAR),  # mixed
        ("nearest_9x4", (9, 4), Image.NEAREST),
        ("nearest_3x16", (3, 16), Image.NEAREST),
    ]:
        tensors[name] = torch.from_numpy(np.array(image.resize((w, h), resample=resample)))

    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    for h, w in [(8, 6), (3, 4)]:
        processor = ViTImageProcessorPil(size={"height": h, "width": w})
        values = processor(images=image, return_tensors="np")["pixel_values"][0]
        tensors[f"vit_{h}x{w}"] = torch.from_numpy(values.astype(np.float32))
    save_file(tensors, str(OUT / "image_reference.safetensors"))


if __name__ == "__main__":
    main()
