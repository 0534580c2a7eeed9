// How the square keyframe covers the sphere, the colormaps and the graticule. Common subset of
// GLSL 330 and GLSL ES 3.00 (needs CIEL_PI from projection.glsl). Shared by sky.frag (one pass,
// the broadcast page), keyframe.frag and sky_lut.frag (the desktop passes).
//
// No seam, no pinched pole: every coordinate is folded with a mirrored repeat, so an image edge
// only ever meets its own mirror image (lon ±90° and ±180° in mapping 0, every tile edge in
// mapping 2). Within CIEL_CAP of a pole the image columns are drawn towards the middle column
// (ciel_squeeze), so the image's whole top row does not converge on the pole point: near the pole
// every longitude shows the same column, and the picture stays continuous, with a bounded stretch,
// through the pole. Mapping 1 fades from the front image to
// the image behind within CIEL_BLEND of the great circle through lon ±90°, each image mirrored past
// its edge.

const float CIEL_CAP = 0.5235987756;    // 30°: the polar caps start at latitude ±60°
const float CIEL_BLEND = 0.2617993878;  // 15°: half width of the front/behind fade (mapping 1)

// Triangle wave: 0..1..0 over each period of 2 (mirrored repeat).
float ciel_mirror(float u) {
    return 1.0 - abs(mod(u, 2.0) - 1.0);
}

// 1 outside the polar caps, falling smoothly to 0 at the poles (linear there: bounded stretch).
float ciel_squeeze(float lat) {
    float x = clamp((0.5 * CIEL_PI - abs(lat)) / CIEL_CAP, 0.0, 1.0);
    return x * (2.0 - x);
}

// Mirrored repeat of unfolded texture coordinates t, the columns drawn by `squeeze` towards the
// middle one (squeeze 1 leaves t in 0..1 as it is).
vec2 ciel_fold_uv(vec2 t, float squeeze) {
    return vec2(0.5 + squeeze * (ciel_mirror(t.x) - 0.5), ciel_mirror(t.y));
}

// Texture coordinates (v = 0 at the image's top row) of one image on the sphere.
// mapping 2: mirrored tiles `spacing` radians wide; otherwise mirrored equirectangular, the image
// spanning lon -90°..90° and lat -90°..90°.
vec2 ciel_image_uv(vec2 ll, int mapping, float spacing) {
    vec2 t = mapping == 2 ? vec2(ll.x / spacing, 0.5 - ll.y / spacing) : vec2(ll.x / CIEL_PI + 0.5, 0.5 - ll.y / CIEL_PI);
    return ciel_fold_uv(t, ciel_squeeze(ll.y));
}

// Mapping 1: weight of the front image, 1 around lon 0 and 0 around lon 180°, fading within
// CIEL_BLEND of the great circle through lon ±90° and the poles (the same width everywhere).
float ciel_front_weight(vec2 ll) {
    return smoothstep(-sin(CIEL_BLEND), sin(CIEL_BLEND), cos(ll.y) * cos(ll.x));
}

// Five-stop colour ramps in the spirit of all-sky survey maps.
vec3 ciel_ramp(vec3 c0, vec3 c1, vec3 c2, vec3 c3, vec3 c4, float t) {
    float s = clamp(t, 0.0, 1.0) * 4.0;
    if (s < 1.0) return mix(c0, c1, s);
    if (s < 2.0) return mix(c1, c2, s - 1.0);
    if (s < 3.0) return mix(c2, c3, s - 2.0);
    return mix(c3, c4, s - 3.0);
}

vec3 ciel_colormap(int map, float t) {
    if (map == 1) return ciel_ramp(vec3(0.00, 0.00, 1.00), vec3(0.00, 0.85, 1.00), vec3(1.00, 0.93, 0.85),
                                   vec3(1.00, 0.45, 0.00), vec3(0.55, 0.00, 0.00), t);
    if (map == 2) return ciel_ramp(vec3(0.00, 0.00, 0.02), vec3(0.34, 0.06, 0.43), vec3(0.73, 0.21, 0.33),
                                   vec3(0.98, 0.55, 0.04), vec3(0.99, 1.00, 0.64), t);
    if (map == 3) return ciel_ramp(vec3(0.27, 0.00, 0.33), vec3(0.23, 0.32, 0.55), vec3(0.13, 0.57, 0.55),
                                   vec3(0.37, 0.79, 0.38), vec3(0.99, 0.91, 0.14), t);
    return vec3(t);
}

// Colormap of the luminance, contrast-stretched around mid-grey so the whole ramp is used.
vec3 ciel_apply_colormap(int map, vec3 img) {
    float lum = dot(img, vec3(0.299, 0.587, 0.114));
    return ciel_colormap(map, clamp(0.5 + 2.0 * (lum - 0.5), 0.0, 1.0));
}

// Antialiased lines at multiples of `spacing` in lon and lat; coverage 0..1.
float ciel_graticule(vec2 ll, float spacing) {
    vec2 g = ll / spacing;
    float lonWrapped = mod(ll.x + 2.0 * CIEL_PI, 2.0 * CIEL_PI) / spacing;
    float fwLon = min(fwidth(g.x), fwidth(lonWrapped));
    float fwLat = fwidth(g.y);
    float dLon = abs(fract(g.x + 0.5) - 0.5) / max(fwLon, 1e-6);
    float dLat = abs(fract(g.y + 0.5) - 0.5) / max(fwLat, 1e-6);
    float lonLine = (1.0 - clamp(dLon - 0.25, 0.0, 1.0)) * (1.0 - smoothstep(0.15, 0.4, fwLon));
    float latLine = 1.0 - clamp(dLat - 0.25, 0.0, 1.0);
    return max(lonLine, latLine);
}

// The diffusion-style dissolve of an image colour (0..1) with four Gaussian samples `noise`:
// cosine schedule alpha_bar(s) = cos^2(pi/2 (s + 0.008) / 1.008), normalised.
vec3 ciel_dissolve(vec3 img, float s, vec3 noise) {
    float a = cos(0.5 * CIEL_PI * (s + 0.008) / 1.008) / cos(0.5 * CIEL_PI * 0.008 / 1.008);
    float abar = clamp(a * a, 0.0, 1.0);
    vec3 x = sqrt(abar) * (img * 2.0 - 1.0) + sqrt(1.0 - abar) * noise;
    return clamp(x * 0.5 + 0.5, 0.0, 1.0);
}
