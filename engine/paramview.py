"""Typed reads of a flat parameter array: generated from engine/params.py by
`python -m engine.params --view`; do not edit.

`ParamView(values)` wraps a float64 array in the registry's layout (a snapshot copy, a
Smoother's output) without copying it; each property reads one parameter. Scalars come
back as float; vectors as a view (their size) into the array. Any thread, as the array.
"""

from __future__ import annotations

import numpy as np

# name → (first slot, size); the layout the properties below read
LAYOUT: dict[str, tuple[int, int]] = {
    "audio/gain": (0, 1),
    "audio/mute": (1, 1),
    "audio/offset": (2, 16),
    "audio/temperature": (18, 1),
    "audio/walk/speed": (19, 1),
    "audio/walk/spread": (20, 1),
    "audio/glide": (21, 1),
    "audio/hold": (22, 1),
    "audio/replay": (23, 1),
    "audio/clip": (24, 1),
    "audio/dissolve": (25, 1),
    "audio/loudness": (26, 1),
    "audio/ceiling": (27, 1),
    "audio/jump": (28, 1),
    "audio/learning": (29, 1),
    "audio/width": (30, 1),
    "audio/voices": (31, 1),
    "audio/cloud/spread": (32, 1),
    "audio/cloud/density": (33, 1),
    "audio/cloud/grain": (34, 1),
    "audio/cloud/pan": (35, 1),
    "audio/cloud/distance": (36, 1),
    "audio/reverb/send": (37, 1),
    "audio/reverb/size": (38, 1),
    "audio/reverb/damp": (39, 1),
    "audio/reverb/level": (40, 1),
    "audio/class": (41, 1),
    "image/offset": (42, 8),
    "image/temperature": (50, 1),
    "image/walk/speed": (51, 1),
    "image/glide": (52, 1),
    "image/hold": (53, 1),
    "image/jump": (54, 1),
    "image/learning": (55, 1),
    "sky/projection": (56, 1),
    "sky/mapping": (57, 1),
    "sky/lon": (58, 1),
    "sky/lat": (59, 1),
    "sky/roll": (60, 1),
    "sky/spin": (61, 1),
    "sky/graticule": (62, 1),
    "sky/spacing": (63, 1),
    "sky/colormap": (64, 1),
    "sky/grain": (65, 1),
    "sky/dissolve": (66, 1),
    "sky/brightness": (67, 1),
    "sky/background": (68, 3),
    "scene/next": (71, 1),
    "note/show": (72, 1),
    "panic": (73, 1),
    "master/fade": (74, 1),
    "listen/source": (75, 1),
    "listen/level": (76, 1),
    "listen/centroid": (77, 1),
    "listen/flatness": (78, 1),
    "listen/onset": (79, 1),
}


class ParamView:
    """One property per parameter of engine.params.PARAMS (the name with "/" as "_")."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    @property
    def audio_gain(self) -> float:
        """audio/gain (float, dB)"""
        return float(self.values[0])

    @property
    def audio_mute(self) -> float:
        """audio/mute (bool)"""
        return float(self.values[1])

    @property
    def audio_offset(self) -> np.ndarray:
        """audio/offset (16 floats, sigma)"""
        return self.values[2:18]

    @property
    def audio_temperature(self) -> float:
        """audio/temperature (float)"""
        return float(self.values[18])

    @property
    def audio_walk_speed(self) -> float:
        """audio/walk/speed (float, sigma/s)"""
        return float(self.values[19])

    @property
    def audio_walk_spread(self) -> float:
        """audio/walk/spread (float, sigma)"""
        return float(self.values[20])

    @property
    def audio_glide(self) -> float:
        """audio/glide (float, s)"""
        return float(self.values[21])

    @property
    def audio_hold(self) -> float:
        """audio/hold (bool)"""
        return float(self.values[22])

    @property
    def audio_replay(self) -> float:
        """audio/replay (bool)"""
        return float(self.values[23])

    @property
    def audio_clip(self) -> float:
        """audio/clip (int)"""
        return float(self.values[24])

    @property
    def audio_dissolve(self) -> float:
        """audio/dissolve (float)"""
        return float(self.values[25])

    @property
    def audio_loudness(self) -> float:
        """audio/loudness (float, dB)"""
        return float(self.values[26])

    @property
    def audio_ceiling(self) -> float:
        """audio/ceiling (float, dBFS)"""
        return float(self.values[27])

    @property
    def audio_jump(self) -> float:
        """audio/jump (trigger)"""
        return float(self.values[28])

    @property
    def audio_learning(self) -> float:
        """audio/learning (float)"""
        return float(self.values[29])

    @property
    def audio_width(self) -> float:
        """audio/width (float)"""
        return float(self.values[30])

    @property
    def audio_voices(self) -> float:
        """audio/voices (int)"""
        return float(self.values[31])

    @property
    def audio_cloud_spread(self) -> float:
        """audio/cloud/spread (float, sigma)"""
        return float(self.values[32])

    @property
    def audio_cloud_density(self) -> float:
        """audio/cloud/density (float)"""
        return float(self.values[33])

    @property
    def audio_cloud_grain(self) -> float:
        """audio/cloud/grain (float, s)"""
        return float(self.values[34])

    @property
    def audio_cloud_pan(self) -> float:
        """audio/cloud/pan (float)"""
        return float(self.values[35])

    @property
    def audio_cloud_distance(self) -> float:
        """audio/cloud/distance (float)"""
        return float(self.values[36])

    @property
    def audio_reverb_send(self) -> float:
        """audio/reverb/send (float)"""
        return float(self.values[37])

    @property
    def audio_reverb_size(self) -> float:
        """audio/reverb/size (float)"""
        return float(self.values[38])

    @property
    def audio_reverb_damp(self) -> float:
        """audio/reverb/damp (float)"""
        return float(self.values[39])

    @property
    def audio_reverb_level(self) -> float:
        """audio/reverb/level (float, dB)"""
        return float(self.values[40])

    @property
    def audio_class(self) -> float:
        """audio/class (float)"""
        return float(self.values[41])

    @property
    def image_offset(self) -> np.ndarray:
        """image/offset (8 floats, sigma)"""
        return self.values[42:50]

    @property
    def image_temperature(self) -> float:
        """image/temperature (float)"""
        return float(self.values[50])

    @property
    def image_walk_speed(self) -> float:
        """image/walk/speed (float, sigma/s)"""
        return float(self.values[51])

    @property
    def image_glide(self) -> float:
        """image/glide (float, s)"""
        return float(self.values[52])

    @property
    def image_hold(self) -> float:
        """image/hold (bool)"""
        return float(self.values[53])

    @property
    def image_jump(self) -> float:
        """image/jump (trigger)"""
        return float(self.values[54])

    @property
    def image_learning(self) -> float:
        """image/learning (float)"""
        return float(self.values[55])

    @property
    def sky_projection(self) -> float:
        """sky/projection (int)"""
        return float(self.values[56])

    @property
    def sky_mapping(self) -> float:
        """sky/mapping (int)"""
        return float(self.values[57])

    @property
    def sky_lon(self) -> float:
        """sky/lon (float, deg)"""
        return float(self.values[58])

    @property
    def sky_lat(self) -> float:
        """sky/lat (float, deg)"""
        return float(self.values[59])

    @property
    def sky_roll(self) -> float:
        """sky/roll (float, deg)"""
        return float(self.values[60])

    @property
    def sky_spin(self) -> float:
        """sky/spin (float, deg/s)"""
        return float(self.values[61])

    @property
    def sky_graticule(self) -> float:
        """sky/graticule (float)"""
        return float(self.values[62])

    @property
    def sky_spacing(self) -> float:
        """sky/spacing (float, deg)"""
        return float(self.values[63])

    @property
    def sky_colormap(self) -> float:
        """sky/colormap (int)"""
        return float(self.values[64])

    @property
    def sky_grain(self) -> float:
        """sky/grain (float)"""
        return float(self.values[65])

    @property
    def sky_dissolve(self) -> float:
        """sky/dissolve (float)"""
        return float(self.values[66])

    @property
    def sky_brightness(self) -> float:
        """sky/brightness (float)"""
        return float(self.values[67])

    @property
    def sky_background(self) -> np.ndarray:
        """sky/background (3 floats)"""
        return self.values[68:71]

    @property
    def scene_next(self) -> float:
        """scene/next (trigger)"""
        return float(self.values[71])

    @property
    def note_show(self) -> float:
        """note/show (bool)"""
        return float(self.values[72])

    @property
    def panic(self) -> float:
        """panic (trigger)"""
        return float(self.values[73])

    @property
    def master_fade(self) -> float:
        """master/fade (float)"""
        return float(self.values[74])

    @property
    def listen_source(self) -> float:
        """listen/source (int)"""
        return float(self.values[75])

    @property
    def listen_level(self) -> float:
        """listen/level (float, dB)"""
        return float(self.values[76])

    @property
    def listen_centroid(self) -> float:
        """listen/centroid (float)"""
        return float(self.values[77])

    @property
    def listen_flatness(self) -> float:
        """listen/flatness (float)"""
        return float(self.values[78])

    @property
    def listen_onset(self) -> float:
        """listen/onset (float)"""
        return float(self.values[79])
