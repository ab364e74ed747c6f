"""Styles of the synthetic set: the same faces and age cues under another camera, scene and age distribution.

Why: a cross-dataset matrix needs a domain shift, and agebench must show one with no download. A style changes
only what real data sets differ in besides the people (background, pose jitter, lighting, colour, blur, noise,
JPEG quality, and the age distribution); every age cue is still drawn from the apparent age, so a model that
learned age, not the style, transfers. ``default`` is the set ``agebench synth`` has always made, byte for byte:
a style only changes the numbers the generator draws with, never how many draws it makes.

``agebench synth --style NAME``; ``agebench synth --list-styles`` prints this table.
"""

from __future__ import annotations

from dataclasses import dataclass

from agebench.errors import UserError


@dataclass(frozen=True)
class Style:
    """Every number of the generator that is not an age cue. Ranges are (low, high) of uniform draws."""

    name: str
    description: str
    # Age distribution of subjects' central ages: children U(0.5, 15), adults N(mean, sd) clipped to a range,
    # and a tail start + Exp(scale) truncated at 97, with the given shares (the rest is the tail).
    child_share: float = 0.1
    adult_share: float = 0.6
    adult_mean: float = 30.0
    adult_sd: float = 7.0
    adult_range: tuple[float, float] = (16.0, 50.0)
    tail_start: float = 42.0
    tail_scale: float = 14.0
    min_age: float = 0.0  # image ages (central age + a person's spread) are clipped below at this
    # Scene and camera.
    clutter: tuple[int, int] = (4, 13)  # number of background shapes (integers in [low, high))
    background_mix: float = 1.0  # 1: random background colours; 0: all plain `background` grey-blue
    background: tuple[float, float, float] = (150.0, 140.0, 130.0)  # BGR of the plain backdrop
    rotation_sd: float = 5.0  # in-plane head rotation, degrees (clipped at +-3 sd)
    scale: tuple[float, float] = (0.88, 1.1)
    shift: float = 0.05  # translation, share of the image side
    light: float = 0.35  # strength of the directional light ramp, at most
    cast: float = 0.1  # per-channel colour gain 1 +- cast
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # fixed BGR gain: the camera's palette
    blur_p: float = 0.3
    noise: float = 4.0  # sensor noise sd, at most, in grey levels
    contrast: tuple[float, float] = (0.75, 1.15)
    brightness: tuple[float, float] = (70.0, 180.0)
    jpeg: tuple[int, int] = (70, 96)  # JPEG quality in [low, high)


STYLES: dict[str, Style] = {
    s.name: s
    for s in (
        Style("default", "the embedded set: cluttered scenes, mild pose and light changes, ages 0-97"),
        Style(
            "chip",
            "the embedded set framed as an aligned face chip: the face fills the frame (scale 1.2-1.35), so its age "
            "cues get about 1.6x the pixels at a small size; ages 0-97",
            scale=(1.2, 1.35),
        ),
        Style(
            "studio",
            "mugshot-like (as MORPH II): plain backdrop, frontal, even light, clean high-quality JPEGs; adults "
            "only (16 and over), few over 60",
            child_share=0.0,
            adult_share=0.85,
            adult_mean=33.0,
            adult_sd=10.0,
            adult_range=(16.0, 60.0),
            tail_start=45.0,
            tail_scale=8.0,
            min_age=16.0,
            clutter=(0, 1),
            background_mix=0.15,
            rotation_sd=2.0,
            scale=(0.96, 1.04),
            shift=0.02,
            light=0.08,
            cast=0.03,
            tint=(1.06, 1.0, 0.95),
            blur_p=0.05,
            noise=1.5,
            contrast=(0.9, 1.05),
            brightness=(110.0, 150.0),
            jpeg=(88, 98),
        ),
        Style(
            "snapshot",
            "in-the-wild (as UTKFace): busy scenes, tilted heads, hard coloured light, blur, noise and heavy "
            "JPEG; many children and old people",
            child_share=0.3,
            adult_share=0.35,
            adult_mean=32.0,
            adult_sd=9.0,
            adult_range=(16.0, 55.0),
            tail_start=50.0,
            tail_scale=16.0,
            clutter=(10, 22),
            rotation_sd=9.0,
            scale=(0.8, 1.15),
            shift=0.08,
            light=0.6,
            cast=0.25,
            tint=(0.88, 1.0, 1.12),
            blur_p=0.5,
            noise=9.0,
            contrast=(0.6, 1.3),
            brightness=(55.0, 200.0),
            jpeg=(25, 60),
        ),
    )
}
DEFAULT_STYLE = "default"


def get_style(name: str) -> Style:
    try:
        return STYLES[name]
    except KeyError:
        raise UserError(f"--style {name!r}: unknown style; choose from {', '.join(STYLES)}") from None
