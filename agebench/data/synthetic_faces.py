"""Drawing for the synthetic face-age set: subject traits, the age cues and the person who shows them.

Everything visible that carries age is a function of the *apparent* age handed to :class:`Face`, never of the
true age, so that the noise between the two stays an irreducible error. Layout is in canonical coordinates on
a supersampled square canvas; one affine warp then applies pose and scale jitter to face and masks together.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Region bits of the masks (see agebench.data.synthetic for the contract).
FOREHEAD, EYE_CORNERS, NASOLABIAL, HAIR, EYES, MOUTH = 1, 2, 4, 8, 16, 32

_SHIFT = 4  # sub-pixel precision of cv2 drawing calls: coordinates are in 1/16 pixel
_ONE = 1 << _SHIFT
_AA = cv2.LINE_AA

# RGB anchors, converted to BGR when drawn.
_SKIN = np.array([[72, 46, 36], [140, 95, 70], [198, 150, 118], [236, 200, 175], [250, 222, 205]], np.float32)
_HAIR = np.array(
    [[22, 20, 18], [55, 38, 28], [105, 70, 45], [150, 75, 40], [165, 125, 85], [225, 195, 135]], np.float32
)
_IRIS = np.array([[60, 35, 20], [100, 65, 35], [70, 110, 160], [80, 120, 80], [110, 115, 120]], np.float32)


@dataclass(frozen=True)
class Traits:
    """What stays fixed for one synthetic person at every age. Colours are BGR floats."""

    gender: str
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    iris: tuple[float, float, float]
    clothes: tuple[float, float, float]
    face_w: float  # half width of the face, as a share of the canvas
    face_ratio: float  # adult half height / half width
    eye_gap: float
    eye_size: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip_h: float
    brow: float
    hair_style: int  # 0 short, 1 medium, 2 long
    fringe: bool
    hair_volume: float
    grey_onset: float  # age at which greying starts
    baldness: float  # 0 keeps the hair, 1 loses the crown with age
    beard: float  # 0 none; otherwise density of adult facial hair
    freckles: int
    tone: float = 0.5  # skin tone in [0, 1]: 0 the darkest anchor, 1 the lightest (the draw behind ``skin``)


def _bgr(rgb: np.ndarray) -> tuple[float, float, float]:
    return (float(rgb[2]), float(rgb[1]), float(rgb[0]))


def _between(anchors: np.ndarray, t: float) -> np.ndarray:
    """Piecewise-linear colour along anchors for t in [0, 1]."""
    x = t * (len(anchors) - 1)
    i = min(int(x), len(anchors) - 2)
    return anchors[i] + (x - i) * (anchors[i + 1] - anchors[i])


def sample_traits(rng: np.random.Generator) -> Traits:
    """Draw one identity. Skin and hair luminance are uniform and age-blind, so brightness says nothing of age."""
    gender = "f" if rng.random() < 0.5 else "m"
    tone = float(rng.random())
    skin = _between(_SKIN, tone) + rng.normal(0, 6, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.8, 1.2) + rng.normal(0, 8, 3)
    style = int(rng.choice(3, p=[0.08, 0.3, 0.62] if gender == "f" else [0.72, 0.22, 0.06]))
    return Traits(
        gender=gender,
        skin=_bgr(np.clip(skin, 20, 255)),
        hair=_bgr(np.clip(hair, 8, 250)),
        iris=_bgr(_IRIS[rng.integers(len(_IRIS))]),
        clothes=_bgr(rng.uniform(20, 235, 3)),
        face_w=float(rng.uniform(0.27, 0.31)),
        face_ratio=float(rng.uniform(1.22, 1.42)),
        eye_gap=float(rng.uniform(0.37, 0.46)),
        eye_size=float(rng.uniform(0.17, 0.21)),
        nose_len=float(rng.uniform(0.88, 1.12)),
        nose_w=float(rng.uniform(0.17, 0.24)),
        mouth_w=float(rng.uniform(0.36, 0.48)),
        lip_h=float(rng.uniform(0.8, 1.25)),
        brow=float(rng.uniform(0.7, 1.4)),
        hair_style=style,
        fringe=bool(rng.random() < (0.2 if gender == "f" else 0.08)),
        hair_volume=float(rng.uniform(0.9, 1.1)),
        grey_onset=float(np.clip(rng.normal(40, 6), 28, 58)),
        baldness=float(rng.random() ** 2 if gender == "m" else rng.uniform(0, 0.2)),
        beard=float(rng.uniform(0.3, 1.0)) if gender == "m" and rng.random() < 0.4 else 0.0,
        freckles=int(rng.integers(8, 25)) if rng.random() < 0.15 else 0,
        tone=tone,
    )


# skin_tone groups: the tone is uniform on [0, 1], so its tertiles are 1/3 and 2/3 (darkest third first).
SKIN_TONES = ("dark", "medium", "light")


def skin_tone_group(tone: float) -> str:
    """``dark`` below the tone's first tertile (1/3), ``light`` from the second (2/3), else ``medium``."""
    return SKIN_TONES[min(2, int(tone * 3))]


def _ramp(a: float, start: float, span: float) -> float:
    return float(np.clip((a - start) / span, 0.0, 1.0))


@dataclass(frozen=True)
class Cues:
    """Strength (0..1) of each age cue: a fixed function of apparent age, the same for every person."""

    child: float  # round face, big eyes, features low, small nose, rosy cheeks
    nasolabial: float
    forehead: float
    crows_feet: float
    eye_bags: float
    marionette: float
    droop: float  # heavier upper lids, thinner lips
    spots: float  # expected number of age spots

    @staticmethod
    def at(a: float) -> Cues:
        return Cues(
            child=float(np.clip(1 - a / 18, 0, 1) ** 1.2),
            nasolabial=_ramp(a, 14, 50),
            forehead=_ramp(a, 20, 60),
            crows_feet=_ramp(a, 26, 60),
            eye_bags=_ramp(a, 34, 66),
            marionette=_ramp(a, 45, 55),
            droop=_ramp(a, 35, 65),
            spots=max(0.0, a - 42) / 5,
        )


def _p(x: float, y: float) -> tuple[int, int]:
    return (int(round(x * _ONE)), int(round(y * _ONE)))


def ellipse(
    img: np.ndarray,
    c: tuple[float, float],
    ax: tuple[float, float],
    color,
    th: int = -1,
    angle: float = 0,
    start: float = 0,
    end: float = 360,
) -> None:
    """cv2.ellipse with float geometry (sub-pixel, anti-aliased): thin folds must not snap to the pixel grid."""
    axes = (max(1, int(round(ax[0] * _ONE))), max(1, int(round(ax[1] * _ONE))))
    cv2.ellipse(img, _p(*c), axes, angle, start, end, color, th, _AA, _SHIFT)


def polyline(img: np.ndarray, pts: np.ndarray, color, th: int) -> None:
    """An open anti-aliased polyline through float points."""
    cv2.polylines(img, [np.round(pts * _ONE).astype(np.int32)], False, color, max(1, th), _AA, _SHIFT)


def fill_poly(img: np.ndarray, pts: np.ndarray, color) -> None:
    """A filled anti-aliased polygon through float points."""
    cv2.fillPoly(img, [np.round(pts * _ONE).astype(np.int32)], color, _AA, _SHIFT)


def _curve(p0, p1, p2, n: int = 12) -> np.ndarray:
    """Quadratic Bezier through p0 and p2 pulled towards p1."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _pts(*xy: float) -> np.ndarray:
    """Points from a flat x0, y0, x1, y1... list (keeps polygon literals on one line)."""
    return np.asarray(xy, np.float64).reshape(-1, 2)


def _mix(a, b, t: float) -> tuple[float, ...]:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b, strict=True))


def _scale(c, f: float) -> tuple[float, ...]:
    return tuple(float(min(255.0, x * f)) for x in c)


def _canvas(r: int) -> np.ndarray:
    return np.zeros((r, r), np.uint8)


class Face:
    """Lays out and draws one person on an R x R canvas; remembers the geometry for the region masks."""

    def __init__(self, t: Traits, apparent_age: float, r: int, rng: np.random.Generator) -> None:
        """Only the apparent age reaches the drawing: the true age must stay invisible (see the MAE floor)."""
        self.t, self.r, self.rng, self.cue = t, r, rng, Cues.at(apparent_age)
        c = self.cue.child
        self.cx, self.cy = 0.5 * r, 0.54 * r
        self.fw = fw = t.face_w * r * (1 + 0.06 * c)
        self.fh = fh = fw * t.face_ratio * (1 - 0.2 * c)
        self.eye_y = self.cy + fh * (-0.1 + 0.2 * c)
        self.eye_dx = fw * t.eye_gap
        self.ew = fw * t.eye_size * (1 + 0.45 * c)
        self.eh = self.ew * (0.5 + 0.12 * c) * (1 - 0.3 * self.cue.droop)
        self.brow_y = self.eye_y - self.eh - fh * 0.12
        self.nose_y = self.eye_y + fh * t.nose_len * (0.4 - 0.12 * c)
        self.nose_w = fw * t.nose_w * (1 - 0.3 * c)
        self.mouth_y = self.nose_y + fh * (0.22 - 0.04 * c)
        self.mouth_w = fw * t.mouth_w * (1 - 0.15 * c)
        recede = t.baldness * _ramp(apparent_age, 25, 45)
        self.hair_y = self.brow_y - 0.2 * fh if t.fringe else self.cy - fh * (0.55 + 0.4 * recede)
        self.grey = _ramp(apparent_age, t.grey_onset, 28)
        self.thin = t.baldness * _ramp(apparent_age, 30, 40)
        self.beard = t.beard * _ramp(apparent_age, 15, 6)
        self.th = max(1, round(r / 128))
        self.img = np.zeros((r, r, 3), np.uint8)
        self.alpha = _canvas(r)
        self.hair_alpha = np.zeros((r, r), np.float32)

    def _layout(self) -> tuple[float, ...]:
        """cx, fw, fh, eye y, mouth y, mouth half width, nose half width, nose y: the numbers every part uses."""
        return self.cx, self.fw, self.fh, self.eye_y, self.mouth_y, self.mouth_w, self.nose_w, self.nose_y

    def _rel(self, *uv: float) -> np.ndarray:
        """Canvas points from face-relative ones: x = cx + u * half width, y = cy + v * half height."""
        return _pts(*uv) * (self.fw, self.fh) + (self.cx, self.cy)

    def _both(self, color, shape: str, *args) -> None:
        """Draw a shape on the colour image and on the alpha matte alike."""
        draw = ellipse if shape == "ellipse" else fill_poly
        draw(self.img, *args, color)
        draw(self.alpha, *args, 255)

    def _hair_texture(self) -> np.ndarray:
        """Hair colour with strands; a share `grey` of the strands is silver, so greying is texture, not tint."""
        t, r, rng = self.t, self.r, self.rng
        silver = _scale((205.0, 200.0, 198.0), rng.uniform(0.95, 1.15))
        tex = np.empty((r, r, 3), np.uint8)
        tex[:] = np.clip(_mix(t.hair, silver, 0.6 * self.grey), 0, 255)
        n = 3 * r
        start = rng.uniform(0, r, (n, 2))
        ang = np.arctan2(start[:, 1] - (self.cy - self.fh * 0.6), start[:, 0] - self.cx) + rng.normal(0, 0.3, n)
        end = start + rng.uniform(0.03, 0.08, (n, 1)) * r * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        segs = np.round(np.stack([start, end], axis=1) * _ONE).astype(np.int32)
        # A few shades per colour, one polylines call per shade (one call per strand is 20x slower).
        grey = rng.random(n) < self.grey
        shade = rng.integers(0, 3, n)
        for is_grey, base, lo, hi in ((False, t.hair, 0.7, 1.3), (True, silver, 0.9, 1.1)):
            for k, f in enumerate(np.linspace(lo, hi, 3)):
                pick = (grey == is_grey) & (shade == k)
                if pick.any():
                    cv2.polylines(tex, list(segs[pick]), False, _scale(base, f), 1, _AA, _SHIFT)
        return tex

    def draw(self) -> None:
        """Body, head, features and folds, then hair over all of it."""
        t, r, cx, cy, fw, fh = self.t, self.r, self.cx, self.cy, self.fw, self.fh
        crown_c, crown_ax = (cx, cy - 0.22 * fh), (fw * 1.02, fh * (0.85 + 0.1 * self.cue.child))
        back = _canvas(r)  # long hair falls behind the neck; the cranium cap is drawn over the face later
        if t.hair_style:
            drop = 0.6 if t.hair_style == 1 else 1.5
            fill_poly(back, self._rel(-1.2, -0.3, 1.2, -0.3, 1.3, drop, -1.3, drop), 255)
            ellipse(back, (cx, cy - 0.3 * fh), (fw * 1.2, fh * 0.95), 255)
        self._both(t.clothes, "ellipse", (cx, cy + fh * 2.05), (fw * 2.4, fh * 0.9))
        self._both(_scale(t.skin, 0.85), "poly", self._rel(-0.45, 0.5, 0.45, 0.5, 0.5, 1.4, -0.5, 1.4))
        ear_y = self.eye_y + fh * 0.1
        for s in (-1, 1):
            self._both(_scale(t.skin, 0.93), "ellipse", (cx + s * fw * 0.97, ear_y), (fw * 0.13, fh * 0.2))
        self._both(t.skin, "ellipse", (cx, cy), (fw, fh))
        self._both(t.skin, "ellipse", crown_c, crown_ax)
        self._features()
        self._wrinkles()
        # Hair: cranium cap minus the face below the hairline, thinned at the crown with age.
        cap, face = _canvas(r), _canvas(r)
        vol = t.hair_volume * (1 - 0.06 * self.thin)
        ellipse(cap, (cx, crown_c[1] - fh * 0.04 * vol), (crown_ax[0] * 1.06 * vol, crown_ax[1] * 1.05 * vol), 255)
        ellipse(face, (cx, cy), (fw * 0.93, fh), 255)
        dy = (np.arange(r, dtype=np.float32)[:, None] - cy) / fh
        dx = (np.arange(r, dtype=np.float32)[None, :] - cx) / fw
        below = (dy > (self.hair_y - cy) / fh + 0.25 * dx**2).astype(np.float32)  # the hairline dips at the temples
        cap_a = cap.astype(np.float32) / 255 * (1 - face.astype(np.float32) / 255 * below)
        if self.thin > 0.01:  # a soft bald patch on the crown (computed: blurring a drawn one is slow)
            crown = (dx / 0.85) ** 2 + ((dy + 0.7) / 0.6) ** 2
            cap_a *= 1 - 0.95 * self.thin * np.clip((1.1 - crown) / 0.4, 0, 1)
        hair_a = np.maximum(cap_a, back.astype(np.float32) / 255 * (1 - self.alpha.astype(np.float32) / 255))
        hair_a = np.maximum(hair_a, self._beard())
        self.img = cv2.blendLinear(self.img, self._hair_texture(), 1 - hair_a, hair_a)
        self.alpha = np.maximum(self.alpha, (hair_a * 255).astype(np.uint8))
        self.hair_alpha = hair_a

    def _beard(self) -> np.ndarray:
        """Adult facial hair as a soft alpha over the jaw (a cue of age for those who grow one)."""
        if self.beard <= 0:
            return np.zeros((self.r, self.r), np.float32)
        cx, cy, fw = self.cx, self.cy, self.fw
        jaw = _canvas(self.r)
        ellipse(jaw, (cx, cy), (fw * 0.95, self.fh * 0.98), 255, start=0, end=180)
        v = (self.nose_y - cy) / self.fh
        fill_poly(jaw, self._rel(-0.9, v, 0.9, v, 0.9, 0, -0.9, 0), 255)
        cv2.rectangle(jaw, (0, 0), (self.r, int(self.nose_y + self.fh * 0.05)), 0, -1)
        ellipse(jaw, (cx, self.mouth_y), (self.mouth_w * 0.6, self.fh * 0.06), 0)
        return jaw.astype(np.float32) / 255 * 0.85 * self.beard

    def _features(self) -> None:
        """Eyes, brows, nose, mouth, cheeks and freckles; sizes and heights follow the child and droop cues."""
        t, cue, img, th = self.t, self.cue, self.img, self.th
        cx, fw, fh, ey, my, mw, nw, ny = self._layout()
        if cue.child > 0.05:
            blush = _mix(t.skin, (120.0, 110.0, 235.0), 0.25 * cue.child)
            for s in (-1, 1):
                ellipse(img, (cx + s * fw * 0.5, ny), (fw * 0.2, fh * 0.1), blush)
        brow_col = _mix(_scale(t.hair, 0.8), (190.0, 190.0, 190.0), 0.5 * self.grey)
        for s in (-1, 1):
            ex = cx + s * self.eye_dx
            ellipse(img, (ex, ey), (self.ew, self.eh), (235, 238, 240))
            ellipse(img, (ex, ey), (self.eh * 0.95, self.eh * 0.95), t.iris)
            ellipse(img, (ex, ey), (self.eh * 0.4, self.eh * 0.4), (15, 15, 15))
            ellipse(img, (ex, ey), (self.ew, self.eh), _scale(t.skin, 0.55), th + 1, start=180, end=360)
            by, bw = self.brow_y, s * self.ew
            brow = _curve((ex - bw * 1.1, by + fh * 0.03), (ex, by - fh * 0.04), (ex + bw * 1.2, by + fh * 0.02))
            polyline(img, brow, brow_col, max(1, round(th * 2.2 * t.brow)))
        nose_dark = _scale(t.skin, 0.65)
        polyline(img, _curve((cx - nw, ny - fh * 0.04), (cx, ny + fh * 0.05), (cx + nw, ny - fh * 0.04)), nose_dark, th)
        for s in (-1, 1):
            ellipse(img, (cx + s * nw * 0.45, ny), (nw * 0.22, fh * 0.025), nose_dark)
        polyline(img, _pts(cx - nw * 0.3, ey + fh * 0.05, cx - nw * 0.4, ny - fh * 0.08), _scale(t.skin, 0.85), th)
        lips = _mix(t.skin, (110.0, 90.0, 190.0), 0.45)
        lh = fh * 0.045 * t.lip_h * (1 - 0.4 * cue.droop)
        corner = fh * 0.03 * cue.droop
        for s in (-1, 1):
            fill_poly(img, _pts(cx - mw, my + corner, cx, my + s * lh * 1.4, cx + mw, my + corner), lips)
        polyline(img, _curve((cx - mw, my + corner), (cx, my - corner), (cx + mw, my + corner)), _scale(lips, 0.5), th)
        for x, y in self.rng.uniform(-1, 1, (t.freckles, 2)):
            ellipse(img, (cx + x * fw * 0.6, ny - fh * 0.05 + y * fh * 0.1), (th * 0.8, th * 0.8), _scale(t.skin, 0.78))

    def _wrinkles(self) -> None:
        """Darken the skin along folds whose strength follows the age cues, then add age spots."""
        cue, r, rng = self.cue, self.r, self.rng
        cx, fw, fh, ey, my, mw, nw, ny = self._layout()
        shade = _canvas(r)

        def fold(pts: np.ndarray, strength: float, width: float = 1.0) -> None:
            if strength > 0.02:
                polyline(shade, pts, int(255 * min(1.0, 0.3 + strength)), round(r / 110 * width * (0.6 + strength)))

        span = self.brow_y - self.hair_y
        for k in range(int(np.ceil(4 * cue.forehead))):
            y = self.brow_y - span * (0.28 + 0.17 * k)
            if y < self.hair_y + 0.08 * span:
                break
            w = fw * (0.45 - 0.03 * k)
            line = _curve((cx - w, y + fh * 0.02), (cx, y - fh * 0.03), (cx + w, y + fh * 0.02), 16)
            fold(line, cue.forehead * (1 - 0.18 * k))
        for s in (-1, 1):
            ex, length = cx + s * (self.eye_dx + self.ew * 1.15), self.ew * (0.35 + 0.5 * cue.crows_feet)
            for ang in (-0.45, 0.0, 0.45)[: 1 + int(np.ceil(2 * cue.crows_feet))]:
                fold(_pts(ex, ey, ex + s * length * np.cos(ang), ey + length * np.sin(ang)), cue.crows_feet)
            nasolabial = _curve(
                (cx + s * nw * 1.1, ny - fh * 0.06),
                (cx + s * mw * 1.15, ny + fh * 0.05),
                (cx + s * mw * 1.1, my + fh * 0.07),
            )
            fold(nasolabial, cue.nasolabial, 1.1)
            bx, bw, bh = cx + s * self.eye_dx, self.ew * 0.8, self.eh
            fold(_curve((bx - bw, ey + bh * 1.3), (bx, ey + bh * 2.3), (bx + bw, ey + bh * 1.3)), cue.eye_bags)
            fold(_pts(cx + s * mw, my + fh * 0.03, cx + s * (mw + fw * 0.05), my + fh * 0.2), cue.marionette)
        dark = cv2.GaussianBlur(shade, (3, 3), 0).astype(np.float32) * (0.65 / 255)
        self.img = cv2.blendLinear(self.img, np.zeros_like(self.img), 1 - dark, dark)
        spot = _mix(_scale(self.t.skin, 0.7), (40.0, 70.0, 110.0), 0.3)
        for _ in range(int(rng.poisson(cue.spots))):
            x, y = rng.uniform(-0.7, 0.7), rng.uniform(-0.9, 0.3)
            if x * x + y * y < 0.7:
                rad = rng.uniform(0.008, 0.02) * r
                ellipse(self.img, (cx + x * fw, self.cy + y * fh), (rad, rad * rng.uniform(0.7, 1)), spot)

    def landmarks(self) -> np.ndarray:
        """The five alignment points [5, 2] in canonical canvas coordinates (OpenCV's: pixel centres at integers):
        eye centres, nose tip (bottom of the nose line) and mouth corners, left to right as seen in the image."""
        cx, _, fh, ey, my, mw, _, ny = self._layout()
        corner = my + fh * 0.03 * self.cue.droop  # where _features draws the mouth corners
        nose = ny + fh * 0.05 / 2  # the apex of the nose curve (a quadratic Bezier peaks halfway to its pull)
        return np.array(
            [[cx - self.eye_dx, ey], [cx + self.eye_dx, ey], [cx, nose], [cx - mw, corner], [cx + mw, corner]],
            np.float64,
        )

    def regions(self) -> np.ndarray:
        """Bit mask of where the age cues live, in canonical coordinates (before the pose warp). Draws nothing from
        the rng, so an image is the same with or without its mask."""
        r, (cx, fw, fh, ey, my, mw, nw, ny) = self.r, self._layout()
        face, band, corners, folds, eyes, mouth = (_canvas(r) for _ in range(6))
        ellipse(face, (cx, self.cy), (fw * 0.93, fh), 1)
        # Lids (droop) and bags: from above the upper lid to below the bag fold's lowest point (ey + 1.8 eh).
        for s in (-1, 1):
            ellipse(eyes, (cx + s * self.eye_dx, ey + self.eh * 0.5), (self.ew * 1.05, self.eh * 1.7), 1)
        # Lips (thinning), mouth corners (droop) and the marionette lines below them (to my + 0.2 fh).
        ellipse(mouth, (cx, my + fh * 0.07), (mw + fw * 0.1, fh * 0.16), 1)
        cv2.rectangle(band, (0, int(self.hair_y)), (r, int(self.brow_y - self.eh * 0.2)), 1, -1)
        for s in (-1, 1):
            ellipse(corners, (cx + s * (self.eye_dx + self.ew * 1.1), ey), (self.ew * 0.75, self.eh * 1.6), 1)
            fold = _pts(
                nw * 0.8, ny - fh * 0.1, mw * 1.3 + fw * 0.05, ny, mw * 1.25, my + fh * 0.12, mw * 0.9, my + fh * 0.08
            )
            fold[:, 0] = cx + s * fold[:, 0]  # mirrored about the face axis
            fill_poly(folds, fold, 1)
        hair = (self.hair_alpha > 0.35).astype(np.uint8)
        return (
            (face & band) * FOREHEAD
            | corners * EYE_CORNERS
            | folds * NASOLABIAL
            | hair * HAIR
            | eyes * EYES
            | mouth * MOUTH
        )
