// Geometry of the composite pass, in pixels (origin bottom-left): the oval's interior, the band
// around its edge and a square around the note circle.
in vec2 aPos;
uniform vec2 uResolution;

void main() {
    gl_Position = vec4(aPos / uResolution * 2.0 - 1.0, 0.0, 1.0);
}
