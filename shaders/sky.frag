// ciel all-sky fragment shader, everything per fragment in one pass (the broadcast page, and the
// sky layer of the desktop's render_scale < 1). Common subset of GLSL 330 and GLSL ES 3.00; the
// loader builds the source as: version header + projection.glsl + noise.glsl + skymap.glsl + this file.
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

vec3 ciel_image(vec2 ll) {
    if (uMapping == 1) {
        vec2 uvFront = ciel_image_uv(ll, 0, uSpacing);
        vec2 uvBack = ciel_image_uv(vec2(ll.x + CIEL_PI, ll.y), 0, uSpacing);
        vec3 front = mix(texture(uImageA0, uvFront).rgb, texture(uImageA1, uvFront).rgb, uMix);
        vec3 back = mix(texture(uImageB0, uvBack).rgb, texture(uImageB1, uvBack).rgb, uMix);
        return mix(back, front, ciel_front_weight(ll));
    }
    vec2 uv = ciel_image_uv(ll, uMapping, uSpacing);
    return mix(texture(uImageA0, uv).rgb, texture(uImageA1, uv).rgb, uMix);
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
            img = ciel_dissolve(img, uDissolve, ciel_gauss4(frag, uFrame).xyz);
        }
        if (uColormap > 0) {
            img = ciel_apply_colormap(uColormap, img);
        }
        img *= uBrightness;
        float line = max(ciel_graticule(ll, uSpacing), 1.0 - clamp(abs(1.0 - r) / fw - 0.5, 0.0, 1.0));
        img = clamp(mix(img, vec3(0.92, 0.94, 1.0), uGraticule * line * 0.8), 0.0, 1.0);
        col = clamp(img + uGrain * 0.1 * ciel_grain(frag, uFrame), 0.0, 1.0);
        if (uLayer == 0) {
            col = mix(uBackground, col, clamp((1.0 - r) / fw + 0.5, 0.0, 1.0));
        }
    }
    float alpha = 1.0;
    if (uLayer == 0) {
        alpha = clamp((1.0 - r) / fw + 0.5, 0.0, 1.0);   // the oval's coverage (NDI keeps it)
        if (uNote.z > 0.0) {
            float d = length(frag - uNote.xy);
            float disc = clamp(uNote.z - d + 0.5, 0.0, 1.0);
            col = mix(col, vec3(0.5 + 0.25 * uNote.w), disc);
            alpha = max(alpha, disc);
        }
        col *= uFade;
        alpha *= uFade;
    }
    fragColor = vec4(col, alpha);
}
