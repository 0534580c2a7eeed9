// The crossfaded keyframe, drawn into a small texture once per frame while it changes (desktop
// only; read by sky_lut.frag with one bilinear fetch per pixel instead of two to four).
// Source = version header + projection.glsl + skymap.glsl + this file; drawn with sky.vert.
//
// uPanorama 0 (mappings 0 and 2): the crossfade of the front keyframes, texel for texel (R x R).
// uPanorama 1 (mapping 1): an equirectangular panorama of the whole sphere (2R x R, lon -180° at
// u = 0, lat 90° at the top row) holding the front image, the image behind and the fade between
// them, so the per-pixel pass needs one fetch there too.
// uColormap > 0 applies the colormap here (per texel); 0 leaves the image colours, as does a
// dissolve, which must colour the noisy image per pixel.

uniform sampler2D uImageA0;  // previous / newest front keyframe
uniform sampler2D uImageA1;
uniform sampler2D uImageB0;  // previous / newest keyframe behind (mapping 1)
uniform sampler2D uImageB1;
uniform float uMix;          // crossfade 0 = previous, 1 = newest
uniform int uColormap;       // colormap applied here (0 = none)
uniform int uPanorama;       // 1: mapping 1 panorama; 0: front crossfade only
uniform vec2 uSize;          // size of the target texture, texels

out vec4 fragColor;

vec3 ciel_front(vec2 uv) {
    return mix(texture(uImageA0, uv).rgb, texture(uImageA1, uv).rgb, uMix);
}

void main() {
    vec2 uv = gl_FragCoord.xy / uSize;  // row 0 of the target = v 0 = the top row of the image
    vec3 col;
    if (uPanorama == 1) {
        vec2 ll = vec2((uv.x - 0.5) * 2.0 * CIEL_PI, (0.5 - uv.y) * CIEL_PI);
        vec2 uvBack = ciel_image_uv(vec2(ll.x + CIEL_PI, ll.y), 0, 1.0);
        vec3 back = mix(texture(uImageB0, uvBack).rgb, texture(uImageB1, uvBack).rgb, uMix);
        col = mix(back, ciel_front(ciel_image_uv(ll, 0, 1.0)), ciel_front_weight(ll));
    } else {
        col = ciel_front(uv);
    }
    if (uColormap > 0) {
        col = ciel_apply_colormap(uColormap, col);
    }
    fragColor = vec4(col, 1.0);
}
