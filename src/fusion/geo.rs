//! Geometry for fusion: WGS84 points, great-circle distance and bearing, and the angle between
//! two headings. Pure.

/// A WGS84 position in degrees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeoPoint {
    pub latitude: f64,
    pub longitude: f64,
}

const EARTH_RADIUS_M: f64 = 6_371_008.8;

impl GeoPoint {
    pub fn new(latitude: f64, longitude: f64) -> GeoPoint {
        GeoPoint { latitude, longitude }
    }

    /// Great-circle (haversine) distance in metres.
    pub fn distance_m(&self, other: &GeoPoint) -> f64 {
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dla = la2 - la1;
        let dlo = (other.longitude - self.longitude).to_radians();
        let a = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * a.sqrt().min(1.0).asin()
    }

    /// Initial bearing towards `other` in degrees (0 = north, clockwise).
    pub fn bearing_deg(&self, other: &GeoPoint) -> f64 {
        let (la1, la2) = (self.latitude.to_radians(), other.latitude.to_radians());
        let dlo = (other.longitude - self.longitude).to_radians();
        let y = dlo.sin() * la2.cos();
        let x = la1.cos() * la2.sin() - la1.sin() * la2.cos() * dlo.cos();
        (y.atan2(x).to_degrees() + 360.0) % 360.0
    }

    /// The point `fraction` (0..1) of the way to `other` (linear in degrees: fine over the few
    /// hundred metres between two reports).
    pub fn towards(&self, other: &GeoPoint, fraction: f64) -> GeoPoint {
        GeoPoint {
            latitude: self.latitude + (other.latitude - self.latitude) * fraction,
            longitude: self.longitude + (other.longitude - self.longitude) * fraction,
        }
    }

    /// The point `metres` away in direction `bearing_deg` (for simulators and tests).
    pub fn offset(&self, bearing_deg: f64, metres: f64) -> GeoPoint {
        let d = metres / EARTH_RADIUS_M;
        let b = bearing_deg.to_radians();
        let la1 = self.latitude.to_radians();
        let lo1 = self.longitude.to_radians();
        let la2 = (la1.sin() * d.cos() + la1.cos() * d.sin() * b.cos()).asin();
        let lo2 = lo1 + (b.sin() * d.sin() * la1.cos()).atan2(d.cos() - la1.sin() * la2.sin());
        GeoPoint {
            latitude: la2.to_degrees(),
            longitude: lo2.to_degrees(),
        }
    }
}

/// The smaller angle between two headings, 0..=180 degrees.
pub fn heading_difference(a: f64, b: f64) -> f64 {
    let d = (a - b).rem_euclid(360.0);
    d.min(360.0 - d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_and_bearings_match_known_values() {
        let shanghai = GeoPoint::new(31.2304, 121.4737);
        let beijing = GeoPoint::new(39.9042, 116.4074);
        let d = shanghai.distance_m(&beijing);
        assert!((d - 1_067_000.0).abs() < 5_000.0, "{d}");
        let east = shanghai.offset(90.0, 1_000.0);
        assert!((shanghai.distance_m(&east) - 1_000.0).abs() < 0.5);
        assert!((shanghai.bearing_deg(&east) - 90.0).abs() < 0.1);
        let mid = shanghai.towards(&east, 0.5);
        assert!((shanghai.distance_m(&mid) - 500.0).abs() < 0.5);
        assert_eq!(heading_difference(350.0, 10.0), 20.0);
        assert_eq!(heading_difference(90.0, 270.0), 180.0);
    }
}
