// ciel all-sky fragment shader for the desktop at full resolution: the inverse projection comes
// precomputed from a texture (inverse.frag), the crossfaded keyframe from a small texture
// (keyframe.frag), so per pixel remain one texelFetch, the 3x3 rotation, lon/lat, one bilinear
// fetch, graticule, grain, the antialiased edge and the fade. Same picture as sky.frag with
// uLayer = 0, except the note circle, which composite.frag draws over its own square.
// Source = version header [+ "#define CIEL_DISSOLVE"] + projection.glsl + noise.glsl +
// skymap.glsl + this file; drawn with composite.vert over rectangles covering the oval and 2 px
// beyond its edge (the rest of the window is cleared to the background).
// Software rasterisers run both sides of every branch, so the dissolve is a separate variant
// (CIEL_DISSOLVE), used only while sky/dissolve > 0, and so is the steady sky (CIEL_TILT): while
// sky/lat and sky/roll stay put, the table of their tilt (inverse.frag with CIEL_TILT) gives
// lon/lat directly and the turn in longitude is an addition.

uniform sampler2D uInverse;  // RGBA32F, window size: view vector, signed edge distance (pixels)
uniform sampler2D uTilted;   // CIEL_TILT: RG32F, window size: lon, lat + 4 k (inverse.frag)
uniform float uLon0;         // CIEL_TILT: longitude at the map centre, radians
uniform sampler2D uKey;      // keyframe.frag's texture (repeat in u, clamp in v)
uniform vec4 uKeyClamp;      // u range (min, max) and v range (min, max) of key lookups
uniform vec4 uKeyMap;        // unfolded uKey coordinates = ll * uKeyMap.xy + uKeyMap.zw (the mapping)
uniform float uSqueeze;      // 1: squeeze the columns at the poles (ciel_squeeze); 0: the panorama has it
uniform mat3 uRotation;      // view vector -> sky vector
uniform float uGraticule;    // graticule and outline opacity 0..1
uniform float uSpacing;      // graticule spacing, radians (also the tile size of mapping 2)
uniform int uColormap;       // colormap still to apply (CIEL_DISSOLVE only)
uniform float uGrain;        // film grain 0..1
uniform float uDissolve;     // diffusion time 0 = image, 1 = pure Gaussian noise (CIEL_DISSOLVE only)
uniform float uBrightness;   // gain on the map colours
uniform float uFade;         // master fade of the whole picture (0 = black)
uniform vec3 uBackground;    // colour outside the oval, linear 0..1
uniform int uFrame;          // frame counter (noise seed)

out vec4 fragColor;

void main() {
    vec2 frag = gl_FragCoord.xy;
#ifdef CIEL_TILT
    vec2 e = texelFetch(uTilted, ivec2(frag), 0).xy;
    float k = floor(e.y * 0.25 + 0.5);
    float edge = k / 64.0;  // signed distance to the oval edge, pixels
    vec2 ll = vec2(e.x + uLon0, e.y - 4.0 * k);
    ll.x -= 2.0 * CIEL_PI * floor(ll.x / (2.0 * CIEL_PI) + 0.5);
#else
    vec4 inv = texelFetch(uInverse, ivec2(frag), 0);
    float edge = inv.w;
    vec2 ll = ciel_lonlat(uRotation * inv.xyz);
#endif
    // ciel_image_uv with the mapping as coefficients (no branch: software GL runs both sides)
    vec2 uv = ciel_fold_uv(ll * uKeyMap.xy + uKeyMap.zw, 1.0 - uSqueeze + uSqueeze * ciel_squeeze(ll.y));
    vec3 img = texture(uKey, clamp(uv, uKeyClamp.xz, uKeyClamp.yw)).rgb;
#ifdef CIEL_DISSOLVE
    img = ciel_dissolve(img, uDissolve, ciel_gauss4(frag, uFrame).xyz);
    if (uColormap > 0) {
        img = ciel_apply_colormap(uColormap, img);
    }
#endif
    img *= uBrightness;
    float line = max(ciel_graticule(ll, uSpacing), 1.0 - clamp(abs(edge) - 0.5, 0.0, 1.0));
    img = clamp(mix(img, vec3(0.92, 0.94, 1.0), uGraticule * line * 0.8), 0.0, 1.0);
    vec3 col = clamp(img + uGrain * 0.1 * ciel_grain(frag, uFrame), 0.0, 1.0);
    float cover = clamp(edge + 0.5, 0.0, 1.0);   // alpha: the oval's coverage (NDI keeps it)
    col = mix(uBackground, col, cover);
    fragColor = vec4(col * uFade, cover * uFade);
}
