"""The picture people look at: face boxes with name, gender and age, and a status line, drawn on a frame.

One drawing function shared by the kiosk window, /snapshot.jpg and /stream, so they always agree.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

import cv2
import numpy as np

from .models.gender import gender_label

# BGR. Distinct hues so a glance (and the kiosk test) tells known from unknown from undecided.
KNOWN_COLOUR = (60, 200, 0)        # green: an enrolled person
UNKNOWN_COLOUR = (0, 140, 255)     # orange: decided, not enrolled
PENDING_COLOUR = (230, 200, 0)     # light blue: identity not decided yet
STATUS_BACKGROUND = (40, 40, 40)
BANNER_BACKGROUND = (140, 60, 0)   # dark blue: a message to the person in front of the camera
TEXT_COLOUR = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class OverlayFace:
    box: tuple[int, int, int, int]     # x, y, w, h in frame pixels
    kind: str                          # "known" | "unknown" | "pending"
    name: str | None = None
    gender: str | None = None
    age: float | None = None

    @property
    def colour(self) -> tuple[int, int, int]:
        return {"known": KNOWN_COLOUR, "unknown": UNKNOWN_COLOUR}.get(self.kind, PENDING_COLOUR)

    @property
    def caption(self) -> str:
        who = self.name if self.kind == "known" else "unknown" if self.kind == "unknown" else "..."
        parts = [who] + ([self.gender] if self.gender else []) + ([f"{self.age:.0f}"] if self.age is not None else [])
        return ", ".join(parts)


def faces_from_tracks(tracks) -> tuple[OverlayFace, ...]:
    """Confirmed tracks in view (seen or held this frame; TrackViews) as overlay records; tracks
    merely waiting out tracking.max_missed_s are not drawn, so a box never lingers after a face left."""
    faces = []
    for track in tracks:
        if not track.confirmed or not track.in_view:
            continue
        kind = "pending" if not track.decided else "known" if track.identity else "unknown"
        female = track.female_probability
        faces.append(OverlayFace(tuple(int(v) for v in track.face.box), kind, track.identity,
                                 gender_label(female)[0] if female is not None else None, track.age))
    return tuple(faces)


def _printable(text: str) -> str:
    # OpenCV's Hershey fonts are ASCII only: "José" becomes "Jose" rather than "Jos??".
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def draw_overlay(image_bgr: np.ndarray, faces: tuple[OverlayFace, ...] | list[OverlayFace],
                 status: str = "", banner: str | None = None) -> np.ndarray:
    """A copy of the frame with every face's box and caption, at the bottom the status line and, at the top,
    the banner (what the person in front of the camera should do: enrolment progress)."""
    canvas = image_bgr.copy()
    height, width = canvas.shape[:2]
    scale = max(0.4, width / 1280)          # text readable on 640 px frames and on 1080p alike
    thickness = max(2, round(width / 320))
    text_thickness = max(1, round(scale * 1.5))
    line_height = int(28 * scale) + 6
    for face in faces:
        x, y, w, h = face.box
        cv2.rectangle(canvas, (x, y), (x + w, y + h), face.colour, thickness)
        caption = _printable(face.caption)
        (text_w, text_h), baseline = cv2.getTextSize(caption, FONT, scale, text_thickness)
        # Caption above the box, or inside its top edge when the box touches the frame's top.
        top = y - line_height if y - line_height >= 0 else y
        cv2.rectangle(canvas, (x, top), (x + text_w + 8, top + line_height), face.colour, cv2.FILLED)
        cv2.putText(canvas, caption, (x + 4, top + line_height - baseline - 3), FONT, scale, (0, 0, 0),
                    text_thickness, cv2.LINE_AA)
    if banner:
        cv2.rectangle(canvas, (0, 0), (width, line_height), BANNER_BACKGROUND, cv2.FILLED)
        (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, text_thickness)
        cv2.putText(canvas, _printable(banner), (6, line_height - baseline - 3), FONT, scale, TEXT_COLOUR,
                    text_thickness, cv2.LINE_AA)
    if status:
        cv2.rectangle(canvas, (0, height - line_height), (width, height), STATUS_BACKGROUND, cv2.FILLED)
        (_, text_h), baseline = cv2.getTextSize("Ag", FONT, scale, text_thickness)
        cv2.putText(canvas, _printable(status), (6, height - baseline - 3), FONT, scale, TEXT_COLOUR,
                    text_thickness, cv2.LINE_AA)
    return canvas
