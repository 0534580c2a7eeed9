// ciel all-sky fragment shader. Common subset of GLSL 330 and GLSL ES 3.00; the loader builds
// the source as: version header + projection.glsl + noise.glsl + this file.
// Every uniform is documented in docs/sky.md.

uniform vec2 uCentre;        // oval centre, pixels (gl_FragCoord space)
uniform float uScale;        // pixels per plane unit
uniform int uProjection;     // 0 Mollweide, 1 Hammer-Aitoff
uniform int uMapping;        // 0 mirrored equirectangular, 1 two hemispheres, 2 tiled
uniform mat3 uRotation;      // view vector -> sky vector
uniform sampler2D uImageA0;  // previous keyframe (front image)
uniform sampler2D uImageA1;  // newest keyframe (front image)
uniform sampler2D uImageB0;  // previous keyframe of the image behind (mapping 1)
uniform sampler2D uImageB1;  // newest keyframe of the image behind (mapping 1)
uniform float uMix;          // crossfade 0 = previous, 1 = newest keyframe
uniform float uGraticule;    // graticule and outline opacity 0..1
uniform float uSpacing;      // graticule spacing, radians (also the tile size of mapping 2)
uniform int uColormap;       // 0 image colours, 1 planck, 2 inferno, 3 viridis, 4 plate (grey)
uniform float uGrain;        // film grain 0..1
uniform float uDissolve;     // diffusion time 0 = image, 1 = pure Gaussian noise
uniform float uBrightness;   // gain on the map colours
uniform float uFade;         // master fade of the whole picture (0 = black)
uniform vec3 uBackground;    // colour outside the oval, linear 0..1
uniform vec4 uNote;          // note circle: centre x, y, radius (pixels; 0 hides), shown (0/1)
uniform int uFrame;          // frame counter (noise seed)
uniform int uLayer;          // 0 = the whole picture; 1 = sky layer (no edge, note, fade) for composite.frag

out vec4 fragColor;

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

// Triangle wave: 0..1..0 over each period of 2 (seamless mirrored repeat).
float ciel_mirror(float u) {
    return 1.0 - abs(mod(u, 2.0) - 1.0);
}

vec3 ciel_image(vec2 ll) {
    vec2 uv;
    if (uMapping == 1) {
        bool front = abs(ll.x) <= 0.5 * CIEL_PI;
        float lon = front ? ll.x : ll.x - sign(ll.x) * CIEL_PI;
        uv = vec2(lon / CIEL_PI + 0.5, 0.5 - ll.y / CIEL_PI);
        if (!front) {
            return mix(texture(uImageB0, uv).rgb, texture(uImageB1, uv).rgb, uMix);
        }
    } else if (uMapping == 2) {
        uv = vec2(ciel_mirror(ll.x / uSpacing), ciel_mirror(0.5 - ll.y / uSpacing));
    } else {
        uv = vec2(ciel_mirror(ll.x / CIEL_PI + 0.5), 0.5 - ll.y / CIEL_PI);
    }
    return mix(texture(uImageA0, uv).rgb, texture(uImageA1, uv).rgb, uMix);
}

// Antialiased lines at multiples of uSpacing in lon and lat; coverage 0..1.
float ciel_graticule(vec2 ll) {
    vec2 g = ll / uSpacing;
    float lonWrapped = mod(ll.x + 2.0 * CIEL_PI, 2.0 * CIEL_PI) / uSpacing;
    float fwLon = min(fwidth(g.x), fwidth(lonWrapped));
    float fwLat = fwidth(g.y);
    float dLon = abs(fract(g.x + 0.5) - 0.5) / max(fwLon, 1e-6);
    float dLat = abs(fract(g.y + 0.5) - 0.5) / max(fwLat, 1e-6);
    float lonLine = (1.0 - clamp(dLon - 0.25, 0.0, 1.0)) * (1.0 - smoothstep(0.15, 0.4, fwLon));
    float latLine = 1.0 - clamp(dLat - 0.25, 0.0, 1.0);
    return max(lonLine, latLine);
}

void main() {
    vec2 frag = gl_FragCoord.xy;
    vec2 p = ciel_plane(frag, uCentre, uScale);
    float r = ciel_oval(p);
    float fw = max(fwidth(r), 1e-6);
    vec3 col = uBackground;
    if (r < 1.0 + 2.0 * fw) {
        vec2 view = ciel_inverse(p, uProjection);
        vec2 ll = ciel_lonlat(uRotation * ciel_unit(view));
        vec3 img = ciel_image(ll);
        if (uDissolve > 0.0) {
            // cosine noise schedule: alpha_bar(s) = cos^2(pi/2 (s + 0.008) / 1.008), normalised
            float a = cos(0.5 * CIEL_PI * (uDissolve + 0.008) / 1.008) / cos(0.5 * CIEL_PI * 0.008 / 1.008);
            float abar = clamp(a * a, 0.0, 1.0);
            vec3 x = sqrt(abar) * (img * 2.0 - 1.0) + sqrt(1.0 - abar) * ciel_gauss4(frag, uFrame).xyz;
            img = clamp(x * 0.5 + 0.5, 0.0, 1.0);
        }
        if (uColormap > 0) {
            // luminance, contrast-stretched around mid-grey so the whole ramp is used
            float lum = dot(img, vec3(0.299, 0.587, 0.114));
            img = ciel_colormap(uColormap, clamp(0.5 + 2.0 * (lum - 0.5), 0.0, 1.0));
        }
        img *= uBrightness;
        float line = max(ciel_graticule(ll), 1.0 - clamp(abs(1.0 - r) / fw - 0.5, 0.0, 1.0));
        img = clamp(mix(img, vec3(0.92, 0.94, 1.0), uGraticule * line * 0.8), 0.0, 1.0);
        col = clamp(img + uGrain * 0.1 * ciel_grain(frag, uFrame), 0.0, 1.0);
        if (uLayer == 0) {
            col = mix(uBackground, col, clamp((1.0 - r) / fw + 0.5, 0.0, 1.0));
        }
    }
    if (uLayer == 0) {
        if (uNote.z > 0.0) {
            float d = length(frag - uNote.xy);
            col = mix(col, vec3(0.5 + 0.25 * uNote.w), clamp(uNote.z - d + 0.5, 0.0, 1.0));
        }
        col *= uFade;
    }
    fragColor = vec4(col, 1.0);
}
