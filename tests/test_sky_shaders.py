"""The shared shader files compile as GLSL 330 (desktop) and as GLSL ES 3.00 (WebGL2, the
broadcast page), checked with the Khronos reference compiler when it is installed."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import missing

from engine.visual.sky import DESKTOP_HEADER, SHADERS, WEBGL_HEADER, fragment_source, vertex_source


@pytest.mark.parametrize("header", [DESKTOP_HEADER, WEBGL_HEADER], ids=["glsl330", "essl300"])
@pytest.mark.parametrize("stage,name,defines", [
    ("vert", "sky.vert", ""), ("frag", "sky.frag", ""), ("frag", "composite.frag", ""),
    ("frag", "sky_lut.frag", ""), ("frag", "sky_lut.frag", "#define CIEL_DISSOLVE 1\n"),
    ("frag", "keyframe.frag", ""), ("frag", "keyframe.frag", "#define CIEL_PANORAMA 1\n"),
    ("frag", "inverse.frag", ""), ("frag", "inverse.frag", "#define CIEL_TILT 1\n"),
    ("frag", "sky_lut.frag", "#define CIEL_TILT 1\n"), ("frag", "sky_lut.frag", "#define CIEL_TILT 1\n#define CIEL_DISSOLVE 1\n")])
def test_shared_shaders_compile_for_desktop_and_webgl2(tmp_path, header, stage, name, defines):
    exe = shutil.which("glslangValidator")
    if exe is None:
        missing("glslangValidator not installed (Debian package glslang-tools)")
    source = vertex_source(header) if stage == "vert" else fragment_source(name, header, defines)
    path = tmp_path / f"shader.{stage}"
    path.write_text(source)
    out = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shared_files_carry_no_version_line():
    for name in ("projection.glsl", "noise.glsl", "skymap.glsl", "sky.frag", "sky.vert", "composite.frag",
                 "sky_lut.frag", "keyframe.frag", "inverse.frag"):
        lines = (SHADERS / name).read_text().splitlines()
        assert not any(ln.startswith(("#version", "precision ")) for ln in lines), name
