// Noise for grain and dissolve. Common subset of GLSL 330 and GLSL ES 3.00 (needs CIEL_PI from
// projection.glsl). Integer hashing, so every GPU and the software rasteriser give the same noise.

// pcg3d hash (Jarzynski & Olano 2020): integer-exact, so every GPU gives the same noise.
uvec3 ciel_pcg3d(uvec3 v) {
    v = v * 1664525u + 1013904223u;
    v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
    v ^= v >> 16u;
    v.x += v.y * v.z; v.y += v.z * v.x; v.z += v.x * v.y;
    return v;
}

float ciel_u01(uint h) {
    return (float(h >> 8u) + 0.5) / 16777216.0;
}

// Four independent standard Gaussian samples for this pixel and frame (Box-Muller).
vec4 ciel_gauss4(vec2 frag, int frame) {
    uvec3 h1 = ciel_pcg3d(uvec3(uint(frag.x), uint(frag.y), uint(frame)));
    uvec3 h2 = ciel_pcg3d(h1);
    float r1 = sqrt(-2.0 * log(ciel_u01(h1.x)));
    float a1 = 2.0 * CIEL_PI * ciel_u01(h1.y);
    float r2 = sqrt(-2.0 * log(ciel_u01(h1.z)));
    float a2 = 2.0 * CIEL_PI * ciel_u01(h2.x);
    return vec4(r1 * cos(a1), r1 * sin(a1), r2 * cos(a2), r2 * sin(a2));
}

// Film grain: triangular noise in [-1, 1] from one 32-bit PCG hash per pixel and frame (two 16-bit
// uniforms): a third of the work of ciel_pcg3d, which the per-pixel pass feels on a CPU.
float ciel_grain(vec2 frag, int frame) {
    uint v = uint(frag.x) + 4096u * uint(frag.y) + 16777259u * (uint(frame) + 7919u);
    v = v * 747796405u + 2891336453u;
    v = ((v >> ((v >> 28u) + 4u)) ^ v) * 277803737u;
    v = (v >> 22u) ^ v;
    return (float(v & 65535u) + float(v >> 16u) + 1.0) / 65536.0 - 1.0;
}
