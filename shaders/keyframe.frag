// The crossfaded keyframe, drawn into a small texture once per frame while it changes (desktop
// only; read by sky_lut.frag with one bilinear fetch per pixel instead of two to four).
// Source = version header + projection.glsl + skymap.glsl + this file; drawn with sky.vert.
//
// Without CIEL_PANORAMA (mappings 0 and 2): the crossfade of the front keyframes, texel for
// texel (R x R). With "#define CIEL_PANORAMA 1" (mapping 1): an equirectangular panorama of the
// whole sphere (2R x R, lon -180° at u = 0, lat 90° at the top row) holding the front image, the
// image behind and the fade between them, so the per-pixel pass needs one fetch there too.
// (Two programs rather than a branch: software GL runs both sides of a branch.)
// uColormap > 0 applies the colormap here (per texel); 0 leaves the image colours, as does a
// dissolve, which must colour the noisy image per pixel.

uniform sampler2D uImageA0;  // previous / newest front keyframe
uniform sampler2D uImageA1;
uniform sampler2D uImageB0;  // previous / newest keyframe behind (mapping 1)
uniform sampler2D uImageB1;
uniform float uMix;          // crossfade 0 = previous, 1 = newest
uniform int uColormap;       // colormap applied here (0 = none)
uniform vec2 uSize;          // size of the target texture, texels

out vec4 fragColor;

void main() {
#ifdef CIEL_PANORAMA
    vec2 uv = gl_FragCoord.xy / uSize;  // row 0 of the target = v 0 = the top row of the images
    vec2 ll = vec2((uv.x - 0.5) * 2.0 * CIEL_PI, (0.5 - uv.y) * CIEL_PI);
    vec2 uvFront = ciel_image_uv(ll, 0, 1.0);
    vec2 uvBack = ciel_image_uv(vec2(ll.x + CIEL_PI, ll.y), 0, 1.0);
    vec3 front = mix(texture(uImageA0, uvFront).rgb, texture(uImageA1, uvFront).rgb, uMix);
    vec3 back = mix(texture(uImageB0, uvBack).rgb, texture(uImageB1, uvBack).rgb, uMix);
    vec3 col = mix(back, front, ciel_front_weight(ll));
#else
    ivec2 texel = ivec2(gl_FragCoord.xy);  // row 0 of the target = the top row of the image
    vec3 col = mix(texelFetch(uImageA0, texel, 0).rgb, texelFetch(uImageA1, texel, 0).rgb, uMix);
#endif
    if (uColormap > 0) {
        col = ciel_apply_colormap(uColormap, col);
    }
    fragColor = vec4(col, 1.0);
}
