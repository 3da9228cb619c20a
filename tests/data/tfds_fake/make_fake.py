"""Writes the tiny fake manual dirs of tests/test_tfds.py (random 8x6 pixels in each real layout).

  python tests/data/tfds_fake/make_fake.py      # from the repository root; deterministic
"""

from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent
rng = np.random.default_rng(0)


def image(path, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, (6, 8, 3) if mode == "RGB" else (6, 8), dtype=np.uint8)
    Image.fromarray(pixels, mode).save(path)


# HAM10000: 10 lesions per diagnosis, every other lesion with two images.
rows, k = ["lesion_id,image_id,dx"], 0
for dx in ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"):
    for lesion in range(10):
        for _ in range(1 + lesion % 2):
            image(HERE / "ham10000" / "images" / f"ISIC_{k:07d}.jpg")
            rows.append(f"HAM_{dx}{lesion},ISIC_{k:07d},{dx}")
            k += 1
(HERE / "ham10000" / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
# Brain MRI: Training 9 and Testing 2 per class, grey and RGB mixed as in the real set.
for c in ("glioma", "meningioma", "notumor", "pituitary"):
    for split, n in (("Training", 9), ("Testing", 2)):
        for i in range(n):
            image(HERE / "brain_tumor_mri" / split / c / f"{c[:2]}_{i}.jpg", "L" if i % 2 else "RGB")
for c in ("Dyskeratotic", "Koilocytotic", "Metaplastic", "Parabasal", "Superficial-Intermediate"):
    for i in range(10):
        image(HERE / "sipakmed" / f"im_{c}" / "CROPPED" / f"{i:03d}.bmp")
for c in ("Bengin cases", "Malignant cases", "Normal cases"):
    for i in range(10):
        image(HERE / "iqothnccd" / c / f"{c.split()[0]} case ({i}).jpg", "L")
for c in ("cats", "dogs"):
    for i in range(10):
        image(HERE / "folder" / c / f"{i}.png")
