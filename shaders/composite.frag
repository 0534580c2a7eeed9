// Upscales the sky layer (sky.frag with uLayer = 1, drawn at a fraction of the window size, grain
// included) and adds at full resolution what must stay sharp: the antialiased oval edge and the
// note circle; then the master fade. Source = version header + projection.glsl + this file.
// Alpha is the oval's (and the note's) coverage; the cleared surround stays transparent.
// Drawn over geometry (composite.vert) after the window is cleared to the background: the
// interior with uInterior = 1 (texture only), the edge band and the note square with 0.

uniform sampler2D uSky;      // the sky layer, bilinear
uniform vec2 uResolution;    // window size, pixels
uniform vec2 uCentre;        // oval centre, pixels (full resolution)
uniform float uScale;        // pixels per plane unit (full resolution)
uniform float uFade;
uniform vec3 uBackground;
uniform vec4 uNote;
uniform int uInterior;       // 1: well inside the oval, no edge or note to draw

out vec4 fragColor;

void main() {
    vec2 frag = gl_FragCoord.xy;
    if (uInterior == 1) {
        fragColor = vec4(texture(uSky, frag / uResolution).rgb * uFade, uFade);
        return;
    }
    float r = ciel_oval(ciel_plane(frag, uCentre, uScale));
    float fw = max(fwidth(r), 1e-6);
    float inside = clamp((1.0 - r) / fw + 0.5, 0.0, 1.0);
    vec3 col = uBackground;
    if (inside > 0.0) {
        col = mix(uBackground, texture(uSky, frag / uResolution).rgb, inside);
    }
    float alpha = inside;   // the oval's coverage: NDI receivers get the sky without its surround
    if (uNote.z > 0.0) {
        float d = length(frag - uNote.xy);
        float disc = clamp(uNote.z - d + 0.5, 0.0, 1.0);
        col = mix(col, vec3(0.5 + 0.25 * uNote.w), disc);
        alpha = max(alpha, disc);
    }
    fragColor = vec4(col * uFade, alpha * uFade);   // a master fade fades the layer in a mixer too
}
